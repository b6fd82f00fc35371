package pebblestore

import (
	"encoding/binary"
	"fmt"
	"maps"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/metadata"

	"github.com/proxylens/proxylens/internal/varint"
)

// MaxMetadataFamilies bounds the families whose metadata is kept; the
// metadata of further families is not stored.
const MaxMetadataFamilies = 100_000

// metadataStore keeps family metadata in memory and in Pebble.
type metadataStore struct {
	mu     sync.RWMutex
	byName map[string]metadata.Metadata
}

func (m *metadataStore) load(db *pebble.DB) error {
	m.byName = map[string]metadata.Metadata{}
	return scan(db, []byte{prefixMetadata}, func(k, v []byte) error {
		rd := varint.Reader{B: v}
		md := metadata.Metadata{Type: model.MetricType(rd.LenBytes()), Help: string(rd.LenBytes()), Unit: string(rd.LenBytes())}
		if rd.Err != nil || len(rd.B) != 0 {
			return fmt.Errorf("metadata of %q: %w", k[1:], errCorrupt)
		}
		m.byName[string(k[1:])] = md
		return nil
	})
}

// SetMetadata records the metadata of metric families, writing only what
// changed. Families beyond MaxMetadataFamilies are ignored.
func (s *SeriesStore) SetMetadata(mds map[string]metadata.Metadata) error {
	s.meta.mu.Lock()
	defer s.meta.mu.Unlock()
	var b *pebble.Batch
	changed := map[string]metadata.Metadata{}
	for name, md := range mds {
		if name == "" {
			continue
		}
		old, ok := s.meta.byName[name]
		if old == md || (!ok && len(s.meta.byName)+len(changed) >= MaxMetadataFamilies) {
			continue
		}
		if b == nil {
			b = s.db.NewBatch()
			defer b.Close()
		}
		v := binary.AppendUvarint(nil, uint64(len(md.Type)))
		v = append(v, md.Type...)
		v = binary.AppendUvarint(v, uint64(len(md.Help)))
		v = append(v, md.Help...)
		v = binary.AppendUvarint(v, uint64(len(md.Unit)))
		v = append(v, md.Unit...)
		if err := b.Set(metadataKey(name), v, nil); err != nil {
			return err
		}
		changed[name] = md
	}
	if b == nil {
		return nil
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("write metadata: %w", err)
	}
	maps.Copy(s.meta.byName, changed)
	return nil
}

// Metadata returns the metadata of the families written from outside.
func (s *SeriesStore) Metadata() map[string]metadata.Metadata {
	s.meta.mu.RLock()
	defer s.meta.mu.RUnlock()
	return maps.Clone(s.meta.byName)
}
