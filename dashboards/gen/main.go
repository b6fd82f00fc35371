// Command gen writes proxylens' Grafana dashboards to dashboards/*.json.
//
//	go run ./dashboards/gen            # from the repository root
//	go run ./dashboards/gen -out DIR   # elsewhere
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/proxylens/proxylens/dashboards"
)

func main() {
	out := flag.String("out", "dashboards", "directory to write the dashboards' JSON to")
	flag.Parse()
	if err := write(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func write(dir string) error {
	files, err := dashboards.Generate()
	if err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, files[name], 0o644); err != nil {
			return fmt.Errorf("write dashboard %s: %w", path, err)
		}
		fmt.Println("wrote", path)
	}
	return nil
}
