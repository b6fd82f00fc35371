package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParseConfig: the config file is YAML that describeYAMLError reads
// again to name the key at a line. Any bytes are parsed or refused with an
// error, and a parsed config is validated, without a panic.
func FuzzParseConfig(f *testing.F) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("sampling:\n  flor: 1\n"))
	f.Add([]byte("a: &a [*a, *a]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg := DefaultConfig()
		if err := Parse(b, &cfg); err != nil {
			if err.Error() == "" {
				t.Fatal("an empty error")
			}
			return
		}
		if err := cfg.Validate(); err != nil && strings.TrimSpace(err.Error()) == "" {
			t.Fatal("an empty validation error")
		}
	})
}
