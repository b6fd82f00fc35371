// Package peers fans exports of raw records out to other proxylens
// instances and merges what they answer in time order.
//
// The raw records (the sampled usage records) live only on the instance
// that received their spans, so when the traffic is split over several
// instances an export of records made on one of them asks each instance
// listed under the config's peers: for the same records. The summaries
// need no fan-out: they are PromQL, which the query upstream answers for
// the whole fleet (docs/query-proxy.md).
//
// A peer is asked through its own API, GET /api/v1/peer/records, with the
// credentials of its Config. That endpoint answers from the peer's own
// store only, whatever peers the peer has itself: a fan-out never fans out
// again, so two instances that list each other cannot loop. It streams
// NDJSON (wire.go): one record per line, in end-time order, then an end
// line with the count; a stream without its end line is cut short, and
// an export that reads one fails rather than being silently incomplete.
//
// Merge (merge.go) is a k-way merge of the local scan and the peers'
// streams: it holds one record per source and the read buffers of the
// open streams, so memory does not grow with the number of records. A
// peer that cannot be reached, refuses the credentials or fails mid-way
// fails the whole merge with an error that names the peer.
//
// A Peer is safe for concurrent use; a Stream is read by one goroutine.
// Merge runs in the calling goroutine (the local scan in an iter.Pull
// coroutine) and closes every stream it opened before it returns.
package peers
