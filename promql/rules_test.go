package promql_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/promql"
)

// fakeRules answers /api/v1/rules with a group named by the request and
// /api/v1/alerts with an error.
type fakeRules struct{}

func (fakeRules) Rules(r *http.Request) (any, error) {
	return map[string]any{"groups": []map[string]string{{"name": r.FormValue("rule_group[]")}}}, nil
}

func (fakeRules) Alerts(*http.Request) (any, error) { return nil, errors.New("no alerts today") }

// TestRulesAPI: a RulesAPI's data goes out in the envelope, its errors
// as bad_data.
func TestRulesAPI(t *testing.T) {
	a := promql.New(promql.Config{}, openStore(t), promql.Options{Rules: fakeRules{}})
	defer a.Close()
	mux := http.NewServeMux()
	a.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	code, env, _ := do(t, http.MethodGet, srv.URL+"/api/v1/rules?rule_group[]=g1", nil)
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `{"groups":[{"name":"g1"}]}`, string(env.Data))
	code, env, _ = do(t, http.MethodGet, srv.URL+"/api/v1/alerts", nil)
	require.Equal(t, http.StatusBadRequest, code)
	require.Equal(t, "error", env.Status)
	require.Equal(t, "bad_data", env.ErrorType)
	require.Equal(t, "no alerts today", env.Error)
}

// TestExecUnaudited: a rule's query is not reported to the audit hook;
// the same query without Unaudited is.
func TestExecUnaudited(t *testing.T) {
	var got []string
	a := promql.New(promql.Config{}, openStore(t), promql.Options{
		Audit: func(_ context.Context, acc promql.Access) { got = append(got, acc.Query) },
	})
	defer a.Close()
	for _, unaudited := range []bool{true, false} {
		res, err := a.Exec(context.Background(), promql.Request{Query: "vector(1)", End: time.Unix(1000, 0), Unaudited: unaudited})
		require.NoError(t, err)
		res.Close()
	}
	require.Equal(t, []string{"vector(1)"}, got)
}
