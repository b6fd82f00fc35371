// Package reporttest reads reports as a person would, for the tests of
// the packages that make them.
package reporttest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// PDFText returns the text of a PDF as pdftotext lays it out, or skips
// the test when pdftotext (Debian's poppler-utils) is not installed.
func PDFText(t testing.TB, pdf []byte) string {
	t.Helper()
	if _, err := exec.LookPath("pdftotext"); err != nil {
		t.Skip("pdftotext (Debian's poppler-utils) is not installed: apt-get install -y poppler-utils")
	}
	f := filepath.Join(t.TempDir(), "report.pdf")
	require.NoError(t, os.WriteFile(f, pdf, 0o640))
	out, err := exec.CommandContext(t.Context(), "pdftotext", "-layout", f, "-").Output()
	require.NoError(t, err)
	return string(out)
}
