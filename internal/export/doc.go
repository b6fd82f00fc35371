// Package export runs proxylens' export jobs and writes their files.
//
// Jobs (jobs.go) is the job queue behind /api/v1/exports: a bounded
// queue, two jobs at a time, each written beside its description in the
// data directory so that a restart still knows it. The datasets
// (datasets.go) are the stored records, scanned with a record filter
// (Options.Records: with peers configured, the server hands a scan that
// merges the peers' records in, internal/peers); the
// hourly and daily summaries per source and application, with their cost,
// PromQL queries built from label matchers and run through the query
// API's entry point, with its limits, concurrency gate and audit; and the
// cost models in force over the range (costs).
//
// The same queue runs jobs of other kinds (Task, SubmitTask): the reports
// of internal/report go through it, in their own directory, with the
// exports' limits, files, audit and expiry.
//
// Writer writes tables of rows as files a spreadsheet opens right: CSV
// (RFC 4180), NDJSON (one JSON object per line) and XLSX.
//
// Every format labels its columns, writes timestamps as RFC 3339 in UTC
// (real date cells in XLSX), keeps numbers at full precision (XLSX: the 15
// significant digits Excel keeps) and streams: memory does not grow with the
// number of rows. XLSX is written with excelize's StreamWriter, which spools
// each sheet to a temporary file, and is split across sheets "data",
// "data 2", … once a sheet reaches Excel's 1,048,576 rows.
//
// A Writer is not safe for concurrent use: one goroutine writes its rows and
// closes it. The methods of Jobs are safe for concurrent use.
package export
