package upstreamtest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// ThanosVersion is the Thanos release .ci/engines builds (receive and
// query are one binary).
const ThanosVersion = "v0.42.4"

// Thanos is the name of the Thanos binary in EnginesDir.
const Thanos = "thanos"

// thanosModule is what Binary's message tells to build: go install refuses
// Thanos (replace directives), so .ci/engines builds it as the main module.
const thanosModule = "github.com/thanos-io/thanos@" + ThanosVersion + " (go mod download it, then in its directory: go build -tags slicelabels ./cmd/thanos)"

// ThanosReceiveLabel is the external label each receiver of
// StartThanosReceive announces, with its index ("0", "1"); Thanos Query
// deduplicates along it (StartThanosQuery), as Thanos' docs advise for
// receivers.
const ThanosReceiveLabel = "receive_replica"

// ThanosReceive is a hashring of Thanos Receive nodes. Each receiver
// accepts remote write and forwards the series the hashring places on
// the other one.
type ThanosReceive struct {
	// Receivers are the nodes: WriteURL is the node's remote write
	// endpoint (/api/v1/receive), URL its HTTP server (status and
	// metrics, no query API); Kill and Restart act on the node and keep
	// its TSDB.
	Receivers []Engine
	// GRPC are the nodes' Store API addresses, for StartThanosQuery.
	GRPC []string
}

// StartThanosReceive starts a hashring of n Thanos Receive nodes (each
// with its own TSDB in t.TempDir(), replication factor 1), that accepts
// samples up to outOfOrder older than a series' newest (proxylens sends
// late spans' counts at their event time only when that is newest, but a
// test's fixture may be older than Receive's head), and waits until each
// is ready.
func StartThanosReceive(t testing.TB, n int, outOfOrder string) ThanosReceive {
	t.Helper()
	bin := Binary(t, Thanos, thanosModule)
	type node struct{ http, grpc, write, capnp string }
	nodes := make([]node, n)
	type endpoint struct {
		Address   string `json:"address"`
		CapNProto string `json:"capnproto_address"`
	}
	ring := []struct {
		Endpoints []endpoint `json:"endpoints"`
	}{{}}
	for i := range nodes {
		nodes[i] = node{http: freeAddr(t), grpc: freeAddr(t), write: freeAddr(t), capnp: freeAddr(t)}
		ring[0].Endpoints = append(ring[0].Endpoints, endpoint{Address: nodes[i].grpc, CapNProto: nodes[i].capnp})
	}
	raw, err := json.Marshal(ring)
	require.NoError(t, err)
	hashring := filepath.Join(t.TempDir(), "hashring.json")
	require.NoError(t, os.WriteFile(hashring, raw, 0o600))

	r := ThanosReceive{}
	for i, nd := range nodes {
		e := start(t, bin, nd.http, "/-/ready",
			"receive",
			"--tsdb.path="+t.TempDir(),
			"--tsdb.retention=100y",
			"--tsdb.out-of-order.time-window="+outOfOrder,
			"--http-address="+nd.http,
			"--grpc-address="+nd.grpc,
			"--remote-write.address="+nd.write,
			"--receive.capnproto-address="+nd.capnp,
			"--receive.hashrings-file="+hashring,
			"--receive.local-endpoint="+nd.grpc,
			"--receive.replication-factor=1",
			fmt.Sprintf("--label=%s=%q", ThanosReceiveLabel, fmt.Sprint(i)),
			"--log.level=warn",
		)
		e.write = "http://" + nd.write + "/api/v1/receive"
		e.name = fmt.Sprintf("thanos-receive-%d", i)
		r.Receivers = append(r.Receivers, e)
		r.GRPC = append(r.GRPC, nd.grpc)
	}
	return r
}

// StartThanosQuery starts a Thanos Query over the Store API endpoints
// (StartThanosReceive's GRPC), deduplicating along ThanosReceiveLabel and
// the further replicaLabels (an HA pair's replica label), and waits until
// it is ready. Its URL is a Prometheus API root; it takes no writes.
func StartThanosQuery(t testing.TB, endpoints []string, replicaLabels ...string) Engine {
	t.Helper()
	bin := Binary(t, Thanos, thanosModule)
	addr := freeAddr(t)
	args := []string{"query",
		"--http-address=" + addr,
		"--grpc-address=" + freeAddr(t),
		"--query.replica-label=" + ThanosReceiveLabel,
		"--log.level=warn",
	}
	for _, l := range replicaLabels {
		args = append(args, "--query.replica-label="+l)
	}
	for _, ep := range endpoints {
		args = append(args, "--endpoint="+ep)
	}
	e := start(t, bin, addr, "/-/ready", args...)
	e.name = "thanos-query"
	return e
}
