package pebblestore_test

import (
	"testing"

	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"

	"github.com/proxylens/proxylens/pebblestore"
)

// testStorage is a series store on a fresh database that closes the
// database with the storage.
type testStorage struct {
	*pebblestore.SeriesStore
	db *pebblestore.DB
}

func (s testStorage) Close() error { return s.db.Close() }

func newTestStorage(t testing.TB) storage.Storage {
	db, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	require.NoError(t, err)
	return testStorage{SeriesStore: db.Series(), db: db}
}

// TestPromQLSuite runs Prometheus' own PromQL acceptance tests (the
// promql/promqltest/testdata files) with the official engine on this
// storage.
func TestPromQLSuite(t *testing.T) {
	t.Parallel() // among the slowest under -race: CI runs them side by side
	promqltest.RunBuiltinTestsWithStorage(t, promqltest.NewTestEngine(t, false, 0, promqltest.DefaultMaxSamplesPerQuery), newTestStorage)
}
