package promql

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/prometheus/prometheus/promql"
)

// Error types, as Prometheus names them.
const (
	errorBadData     = "bad_data"
	errorExec        = "execution"
	errorTimeout     = "timeout"
	errorCanceled    = "canceled"
	errorInternal    = "internal"
	errorNotFound    = "not_found"
	errorUnavailable = "unavailable"
)

var errorStatus = map[string]int{
	errorBadData:     http.StatusBadRequest,
	errorExec:        http.StatusUnprocessableEntity,
	errorTimeout:     http.StatusServiceUnavailable,
	errorCanceled:    499,
	errorInternal:    http.StatusInternalServerError,
	errorNotFound:    http.StatusNotFound,
	errorUnavailable: http.StatusServiceUnavailable,
}

type apiError struct {
	typ string
	err error
}

func (e *apiError) Error() string { return e.err.Error() }

func badData(format string, args ...any) *apiError {
	return &apiError{typ: errorBadData, err: fmt.Errorf(format, args...)}
}

// constructionError maps an error creating a query: a parse error is bad
// data, but the engine also waits there for a query slot, and a request
// that times out or is canceled while it waits is not bad data.
func constructionError(ctx context.Context, err error) *apiError {
	if ctx.Err() != nil {
		return engineError(err)
	}
	return badData("invalid parameter %q: %v", "query", err)
}

// engineError maps the engine's errors to Prometheus' error types.
func engineError(err error) *apiError {
	var (
		eqc promql.ErrQueryCanceled
		eqt promql.ErrQueryTimeout
		es  promql.ErrStorage
	)
	switch {
	case errors.As(err, &eqc), errors.Is(err, context.Canceled):
		return &apiError{typ: errorCanceled, err: err}
	case errors.As(err, &eqt), errors.Is(err, context.DeadlineExceeded):
		return &apiError{typ: errorTimeout, err: err}
	case errors.As(err, &es):
		return &apiError{typ: errorInternal, err: err}
	}
	return &apiError{typ: errorExec, err: err}
}
