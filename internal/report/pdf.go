package report

import (
	"bytes"
	"fmt"
	"io"
	"strconv"

	"codeberg.org/go-pdf/fpdf"
)

// PDF layout, in millimetres on A4 portrait.
const (
	pdfMargin = 15.0
	pdfRowH   = 5.2
)

// WritePDF writes the report as a PDF: a title with the period and the
// filters, the charts as PNG images, the tables, and page numbers.
func WritePDF(w io.Writer, r *Report) error {
	pdf := fpdf.New("P", "mm", "A4", "")
	pdf.SetMargins(pdfMargin, pdfMargin, pdfMargin)
	pdf.SetAutoPageBreak(true, pdfMargin)
	pdf.SetCreationDate(r.Generated)
	pdf.SetModificationDate(r.Generated)
	tr := pdf.UnicodeTranslatorFromDescriptor("") // cp1252 for the core fonts
	title, sub := r.Title()
	pdf.SetTitle(title, true)
	pdf.SetCreator("proxylens", true)
	pdf.AliasNbPages("{nb}")
	pdf.SetFooterFunc(func() {
		pdf.SetY(-pdfMargin + 3)
		pdf.SetFont("Helvetica", "", 8)
		pdf.SetTextColor(0x77, 0x77, 0x77)
		pdf.CellFormat(0, 5, tr(title+" · "+r.Start.UTC().Format("02 Jan 2006")+" – "+r.End.UTC().Format("02 Jan 2006")), "", 0, "L", false, 0, "")
		pdf.CellFormat(0, 5, fmt.Sprintf("Page %d of {nb}", pdf.PageNo()), "", 0, "R", false, 0, "")
	})
	pdf.AddPage()
	pdf.SetFont("Helvetica", "B", 20)
	pdf.SetTextColor(0x22, 0x22, 0x22)
	pdf.CellFormat(0, 10, tr(title), "", 1, "L", false, 0, "")
	pdf.SetFont("Helvetica", "", 10)
	pdf.SetTextColor(0x55, 0x55, 0x55)
	pdf.MultiCell(0, 5, tr(sub), "", "L", false)
	pdf.MultiCell(0, 5, tr(r.Filters()), "", "L", false)
	pdf.Ln(2)

	width := 210 - 2*pdfMargin
	_, pageH := pdf.GetPageSize()
	room := func(h float64) {
		if pdf.GetY()+h > pageH-pdfMargin-4 {
			pdf.AddPage()
		}
	}
	n := 0
	for _, s := range r.Sections() {
		// Keep a section's title with its first chart or table rows.
		first := 12 + 3*pdfRowH
		if len(s.Charts) > 0 {
			first = 20 + float64(s.Charts[0].height)*25.4/72
		}
		room(first)
		pdf.Ln(3)
		pdf.SetFont("Helvetica", "B", 14)
		pdf.SetTextColor(0x22, 0x22, 0x22)
		pdf.CellFormat(0, 8, tr(s.Title), "B", 1, "L", false, 0, "")
		if s.Note != "" {
			pdf.SetFont("Helvetica", "I", 9)
			pdf.SetTextColor(0x55, 0x55, 0x55)
			pdf.MultiCell(0, 4.5, tr(s.Note), "", "L", false)
		}
		pdf.Ln(1)
		for _, c := range s.Charts {
			png, err := c.PNG()
			if err != nil {
				return err
			}
			h := float64(c.height) * 25.4 / 72 // points to millimetres
			room(h + 7)
			pdf.SetFont("Helvetica", "B", 10)
			pdf.SetTextColor(0x33, 0x33, 0x33)
			pdf.CellFormat(0, 6, tr(c.Title), "", 1, "L", false, 0, "")
			name := "chart" + strconv.Itoa(n)
			n++
			pdf.RegisterImageOptionsReader(name, fpdf.ImageOptions{ImageType: "PNG"}, bytes.NewReader(png))
			pdf.ImageOptions(name, pdfMargin+(width-170)/2, pdf.GetY(), 170, h, true, fpdf.ImageOptions{ImageType: "PNG"}, 0, "")
			pdf.Ln(2)
		}
		for _, t := range s.Tables {
			pdfTable(pdf, tr, t, width, room)
		}
	}
	if err := pdf.Error(); err != nil {
		return fmt.Errorf("write PDF: %w", err)
	}
	return pdf.Output(w)
}

// pdfTable draws a table, its head repeated on every page it spans; a
// cell too wide for its column is printed smaller.
func pdfTable(pdf *fpdf.Fpdf, tr func(string) string, t Table, width float64, room func(float64)) {
	size := 8.5
	if len(t.Head) > 8 {
		size = 7
	}
	head := func() {
		pdf.SetFont("Helvetica", "B", size)
		pdf.SetFillColor(0xee, 0xf2, 0xf7)
		pdf.SetTextColor(0x22, 0x22, 0x22)
		pdf.SetDrawColor(0xb8, 0xc4, 0xd4)
		for i, h := range t.Head {
			cell(pdf, tr(h), t.Widths[i]*width, align(i), true, "B", size, "B")
		}
		pdf.Ln(-1)
	}
	room(2 * pdfRowH)
	head()
	pdf.SetDrawColor(0xe3, 0xe6, 0xea)
	for j, row := range t.Rows {
		_, pageH := pdf.GetPageSize()
		if pdf.GetY()+pdfRowH > pageH-pdfMargin-4 {
			pdf.AddPage()
			head()
			pdf.SetDrawColor(0xe3, 0xe6, 0xea)
		}
		pdf.SetTextColor(0x22, 0x22, 0x22)
		if j%2 == 1 {
			pdf.SetFillColor(0xfa, 0xfb, 0xfc)
		} else {
			pdf.SetFillColor(0xff, 0xff, 0xff)
		}
		for i, v := range row {
			cell(pdf, tr(v), t.Widths[i]*width, align(i), true, "B", size, "")
		}
		pdf.Ln(-1)
	}
	pdf.Ln(3)
}

func align(col int) string {
	if col == 0 {
		return "L"
	}
	return "R"
}

// cell prints s in a cell w wide, smaller when it does not fit.
func cell(pdf *fpdf.Fpdf, s string, w float64, align string, fill bool, border string, size float64, style string) {
	pdf.SetFont("Helvetica", style, size)
	for sz := size; pdf.GetStringWidth(s) > w-2 && sz > 6; sz -= 0.5 {
		pdf.SetFontSize(sz - 0.5)
	}
	pdf.CellFormat(w, pdfRowH, s, border, 0, align, fill, 0, "")
	pdf.SetFont("Helvetica", style, size)
}
