package backup

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/zstd"
)

// An archive is one zstd stream of a tar stream, in three parts:
//
//  1. zstd frames holding the tar entries of the data directory;
//  2. zstd frames holding the MANIFEST.json entry and the tar trailer,
//     starting at a tar block boundary;
//  3. a 24-byte zstd skippable frame (which every zstd decoder skips): the
//     magic 0x184D2A5E and length 16 (both uint32 LE), "PLXLMNFT", and the
//     offset in the file where part 2 starts (uint64 LE).
//
// `zstd -d | tar -x` reads it like any .tar.zst; List reads just parts 2
// and 3 to tell a complete archive from a damaged one without
// decompressing the data.

const (
	footerSize  = 24
	footerMagic = 0x184D2A5E
	footerTag   = "PLXLMNFT"
)

func appendFooter(b []byte, manifestOffset int64) []byte {
	b = binary.LittleEndian.AppendUint32(b, footerMagic)
	b = binary.LittleEndian.AppendUint32(b, footerSize-8)
	b = append(b, footerTag...)
	return binary.LittleEndian.AppendUint64(b, uint64(manifestOffset))
}

// parseFooter returns the offset of the manifest part, or false.
func parseFooter(b []byte, fileSize int64) (int64, bool) {
	if len(b) != footerSize ||
		binary.LittleEndian.Uint32(b) != footerMagic ||
		binary.LittleEndian.Uint32(b[4:]) != footerSize-8 ||
		string(b[8:16]) != footerTag {
		return 0, false
	}
	off := binary.LittleEndian.Uint64(b[16:])
	if off >= uint64(fileSize-footerSize) {
		return 0, false
	}
	return int64(off), true
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type countingReader struct {
	r io.Reader
	p *progress
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.p.add(int64(n))
	return n, err
}

func newEncoder(w io.Writer) (*zstd.Encoder, error) {
	// One goroutine: backups run next to ingest, which has priority.
	return zstd.NewWriter(w, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
}

func newDecoder(r io.Reader) (*zstd.Decoder, error) {
	return zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(128<<20))
}

// readArchiveManifest reads the manifest of an archive through its footer,
// or, if it has none (it was recompressed by another tool), by reading the
// whole stream.
func readArchiveManifest(path string) (*Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	foot := make([]byte, footerSize)
	if st.Size() < footerSize {
		return nil, fmt.Errorf("%w: %s: %d bytes is too short for an archive", ErrCorrupt, path, st.Size())
	}
	if _, err := f.ReadAt(foot, st.Size()-footerSize); err != nil {
		return nil, err
	}
	off, ok := parseFooter(foot, st.Size())
	var b []byte
	if ok {
		b, err = manifestFromTail(io.NewSectionReader(f, off, st.Size()-footerSize-off))
	} else {
		b, err = manifestFromStream(f)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m, err := decodeManifest(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
	}
	return m, nil
}

// manifestFromTail reads part 2 of an archive: the manifest entry, then the
// end of the tar stream.
func manifestFromTail(r io.Reader) ([]byte, error) {
	dec, err := newDecoder(r)
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	tr := tar.NewReader(dec)
	hdr, err := tr.Next()
	if err != nil {
		return nil, fmt.Errorf("%w: read the manifest entry: %w", ErrCorrupt, err)
	}
	if hdr.Name != ManifestName {
		return nil, fmt.Errorf("%w: the entry the footer points to is %q, not %s", ErrCorrupt, hdr.Name, ManifestName)
	}
	b, err := readManifestEntry(tr, hdr)
	if err != nil {
		return nil, err
	}
	if _, err := tr.Next(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %s is not the last entry (%v)", ErrCorrupt, ManifestName, err)
	}
	return b, nil
}

// manifestFromStream reads a whole archive and returns its last entry if
// that is the manifest.
func manifestFromStream(r io.Reader) ([]byte, error) {
	dec, err := newDecoder(r)
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	tr := tar.NewReader(dec)
	var last []byte
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: read archive: %w", ErrCorrupt, err)
		}
		last = nil
		if hdr.Name == ManifestName {
			if last, err = readManifestEntry(tr, hdr); err != nil {
				return nil, err
			}
		}
	}
	if last == nil {
		return nil, fmt.Errorf("%w: the archive does not end with %s", ErrIncomplete, ManifestName)
	}
	return last, nil
}

func readManifestEntry(tr *tar.Reader, hdr *tar.Header) ([]byte, error) {
	if hdr.Typeflag != tar.TypeReg || hdr.Size > maxManifestBytes {
		return nil, fmt.Errorf("%w: %s is not a regular file of at most %d bytes", ErrCorrupt, ManifestName, maxManifestBytes)
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, tr); err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", ErrCorrupt, ManifestName, err)
	}
	return buf.Bytes(), nil
}
