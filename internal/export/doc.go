// Package export writes tables of rows as files a spreadsheet opens right:
// CSV (RFC 4180), NDJSON (one JSON object per line) and XLSX.
//
// Every format labels its columns, writes timestamps as RFC 3339 in UTC
// (real date cells in XLSX), keeps numbers at full precision (XLSX: the 15
// significant digits Excel keeps) and streams: memory does not grow with the
// number of rows. XLSX is written with excelize's StreamWriter, which spools
// each sheet to a temporary file, and is split across sheets "data",
// "data 2", … once a sheet reaches Excel's 1,048,576 rows.
//
// A Writer is not safe for concurrent use: one goroutine writes its rows and
// closes it.
package export
