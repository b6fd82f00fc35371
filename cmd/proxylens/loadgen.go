package main

import (
	"context"
	"errors"
	"io"
)

func loadgen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("loadgen: not implemented yet")
}
