package receiver

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/gzip" // gRPC's gzip, whose compressing side is reused
)

// Decompression, bounded by the in-flight budget: what a decompressor
// produces is reserved as it is produced, and so is the decompressor's own
// state (a zstd frame's window, up to maxZstdWindow; gzip's fixed state),
// so that a small compressed body cannot make proxylens hold more than the
// budget.

// maxZstdWindow bounds the history a zstd frame may ask for: the window of
// zstd's default levels, which every OTLP client we know stays within
// (the Collector's gRPC exporter uses 512 KiB). A frame asking for more is
// refused as too large; zstd's long mode (128 MiB) is not supported.
const maxZstdWindow = 8 << 20

// gzipState is what a gzip decompressor holds besides its output (a 32 KiB
// window and its Huffman tables), reserved per body.
const gzipState = 64 << 10

// errZstdWindow refuses a zstd frame whose window is larger than
// maxZstdWindow.
var errZstdWindow = fmt.Errorf("%w: zstd window larger than %d bytes", errTooLarge, maxZstdWindow)

// errInflateBudget refuses a compressed message whose decompression would
// pass the in-flight budget.
var errInflateBudget = errors.New("in-flight request bytes exhausted while decompressing")

// A compressed gRPC message that is refused while gRPC decompresses it
// cannot be refused there with the status the OTLP specification asks for:
// gRPC answers every decompressor error itself, as Internal, which clients
// do not retry. Instead the decompressor ends the message early with one of
// these markers (protobuf field 0, which no valid message has) and the
// handler, which finds it at the end of the message, refuses the request as
// it should: Unavailable when the budget is full, ResourceExhausted when
// the zstd window is too large. A client that puts a marker at the end of
// its own message only has its own request refused.
var (
	markOverloaded = []byte("\x00proxylens: refused while decompressing: overloaded")
	markZstdWindow = []byte("\x00proxylens: refused while decompressing: zstd window")
)

// inflateRefusal is the error of a message that ends with a marker, or nil.
func inflateRefusal(body []byte) error {
	switch {
	case bytes.HasSuffix(body, markOverloaded):
		return errInflateBudget
	case bytes.HasSuffix(body, markZstdWindow):
		return errZstdWindow
	}
	return nil
}

func newZstdDecoder() (*zstd.Decoder, error) {
	return zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(maxZstdWindow), zstd.WithDecoderMaxMemory(maxZstdWindow))
}

// zstdFrameHeaderMax is the largest zstd frame header: magic, descriptor,
// window descriptor, dictionary id and content size.
const zstdFrameHeaderMax = 18

// zstdWindow reads the first frame header of a zstd stream from src and
// returns the window the decoder will hold for it and a reader of the
// whole stream again. A frame that does not parse is left to the decoder
// to refuse (its window is then the smallest). A stream that starts with a
// skippable frame is given the largest window.
func zstdWindow(src io.Reader) (window int64, stream io.Reader, err error) {
	hdr := make([]byte, zstdFrameHeaderMax)
	n, err := io.ReadFull(src, hdr)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return 0, nil, err
	}
	hdr = hdr[:n]
	stream = io.MultiReader(bytes.NewReader(hdr), src)
	var h zstd.Header
	if h.Decode(hdr) != nil {
		return zstd.MinWindowSize, stream, nil
	}
	switch {
	case h.Skippable:
		return maxZstdWindow, stream, nil
	case h.SingleSegment:
		if h.FrameContentSize > maxZstdWindow {
			return 0, nil, errZstdWindow
		}
		return max(int64(h.FrameContentSize), zstd.MinWindowSize), stream, nil
	case h.WindowSize > maxZstdWindow:
		return 0, nil, errZstdWindow
	}
	return max(int64(h.WindowSize), zstd.MinWindowSize), stream, nil
}

// zstdState is the memory a streaming zstd decoder holds for a frame of
// the given window: the window and room for two blocks (see the decoder's
// history ring), and its block buffers.
func zstdState(window int64) int64 {
	return window + 2*min(window, 128<<10) + 64<<10
}

// resetZstd points d at stream, refusing frames with a window over window.
func resetZstd(d *zstd.Decoder, stream io.Reader, window int64) error {
	return d.ResetWithOptions(stream, zstd.WithDecoderMaxWindow(uint64(window)), zstd.WithDecoderMaxMemory(uint64(window)))
}

// grpcInflateBudget is the budget compressed gRPC messages are
// decompressed against. gRPC's compressors are registered process-wide
// (encoding.RegisterCompressor, at program start) and are not told which
// server a message came to, so this is per process: the budget of the
// receiver started last among those running (proxylens runs one; tests
// may run several). Without a receiver running, decompression is bounded
// by the message size limit only.
var grpcInflateBudget inflateBudgets

type inflateBudgets struct {
	mu      sync.Mutex
	running []*budget // in the order they started
	current atomic.Pointer[budget]
}

func (g *inflateBudgets) Load() *budget { return g.current.Load() }

// started makes b the budget of gRPC decompression.
func (g *inflateBudgets) started(b *budget) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.running = append(g.running, b)
	g.current.Store(b)
}

// stopped hands gRPC decompression back to the receiver started before b.
func (g *inflateBudgets) stopped(b *budget) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.running = slices.DeleteFunc(g.running, func(x *budget) bool { return x == b })
	var cur *budget
	if n := len(g.running); n > 0 {
		cur = g.running[n-1]
	}
	g.current.Store(cur)
}

func init() {
	// gRPC requires compressors to be registered at program initialisation,
	// before any server or client runs (encoding.RegisterCompressor is not
	// safe for concurrent use). zstd lets clients send what the Collector
	// accepts; gzip replaces gRPC's own decompressing side with one that
	// reserves what it produces, and keeps its compressing side.
	encoding.RegisterCompressor(&zstdCompressor{})
	encoding.RegisterCompressor(&gzipCompressor{compress: encoding.GetCompressor("gzip")})
}

// zstdCompressor lets gRPC clients send zstd-compressed requests, as the
// Collector accepts them.
type zstdCompressor struct{ decoders sync.Pool }

func (*zstdCompressor) Name() string { return "zstd" }

func (*zstdCompressor) Compress(w io.Writer) (io.WriteCloser, error) {
	return zstd.NewWriter(w, zstd.WithEncoderConcurrency(1))
}

func (z *zstdCompressor) Decompress(r io.Reader) (io.Reader, error) {
	in := &reservingReader{b: grpcInflateBudget.Load()}
	window, stream, err := zstdWindow(r)
	if errors.Is(err, errZstdWindow) {
		in.mark = markZstdWindow
		return in, nil
	}
	if err != nil {
		return nil, err
	}
	if err := in.reserve(zstdState(window)); err != nil {
		in.mark = markOverloaded
		return in, nil
	}
	d, ok := z.decoders.Get().(*zstd.Decoder)
	if !ok {
		if d, err = newZstdDecoder(); err != nil {
			in.Close()
			return nil, err
		}
	}
	if err := resetZstd(d, stream, window); err != nil {
		z.decoders.Put(d)
		in.Close()
		return nil, err
	}
	in.r = d
	in.done = func() {
		_ = d.Reset(nil) // drop the reference to the message
		z.decoders.Put(d)
	}
	return in, nil
}

// gzipCompressor is gRPC's gzip with a decompressing side that reserves
// what it produces.
type gzipCompressor struct {
	compress encoding.Compressor
	readers  sync.Pool // *gzip.Reader
}

func (*gzipCompressor) Name() string { return "gzip" }

func (g *gzipCompressor) Compress(w io.Writer) (io.WriteCloser, error) {
	return g.compress.Compress(w)
}

func (g *gzipCompressor) Decompress(r io.Reader) (io.Reader, error) {
	in := &reservingReader{b: grpcInflateBudget.Load()}
	if err := in.reserve(gzipState); err != nil {
		in.mark = markOverloaded
		return in, nil
	}
	zr, _ := g.readers.Get().(*gzip.Reader)
	var err error
	if zr == nil {
		zr, err = gzip.NewReader(r)
	} else {
		err = zr.Reset(r)
	}
	if err != nil {
		in.Close()
		return nil, err
	}
	in.r = zr
	in.done = func() { g.readers.Put(zr) }
	return in, nil
}

// reservingReader reserves from b what r produces, before it is produced,
// and releases it all at Close, which gRPC calls once the message is read
// (the handler then reserves the message it holds). When the budget is
// full, or mark is set from the start, the message ends with a marker.
type reservingReader struct {
	r    io.Reader
	b    *budget
	held int64
	done func() // returns the decompressor to its pool
	mark []byte // the rest of the marker to end the message with
}

func (x *reservingReader) reserve(n int64) error {
	if !x.b.acquire(n, x.held) {
		return errInflateBudget
	}
	x.held += n
	return nil
}

func (x *reservingReader) Read(p []byte) (int, error) {
	if x.mark != nil {
		n := copy(p, x.mark)
		if x.mark = x.mark[n:]; len(x.mark) == 0 {
			x.mark, x.r = nil, nil // sent: EOF next
		}
		return n, nil
	}
	if x.r == nil {
		return 0, io.EOF
	}
	want := int64(len(p))
	if err := x.reserve(want); err != nil {
		x.mark = markOverloaded
		return x.Read(p)
	}
	n, err := x.r.Read(p)
	x.held -= want - int64(n)
	x.b.release(want - int64(n))
	return n, err
}

// Close releases the reservation and the decompressor.
func (x *reservingReader) Close() error {
	x.b.release(x.held)
	x.held = 0
	if x.done != nil {
		x.done()
		x.done = nil
	}
	x.r = nil
	return nil
}
