// Command proxylens turns the OpenTelemetry spans of proxied requests into
// usage, performance and cost analytics.
//
//	proxylens [serve] [flags]   run the server (the default)
//	proxylens demo [flags]      send realistic proxy traffic over OTLP
//	proxylens loadgen [flags]   load-test an OTLP/gRPC endpoint
//	proxylens backup --to DIR   take a backup
//	proxylens restore --from BACKUP --data-dir DIR
//
// Run a command with -h for its flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	// The time zone database, so that peak_hours.tz works on hosts
	// without one (a static binary in a scratch container).
	_ "time/tzdata"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "proxylens:", err)
		os.Exit(1)
	}
}

// errUsage marks a command line or configuration that was refused; the
// message has been printed.
var errUsage = errors.New("usage error")

// parseFlags parses a command's flags: -h and --help return flag.ErrHelp
// (the usage has been printed), any other problem errUsage (fs printed it).
func parseFlags(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		return errUsage
	}
	return err
}

const usage = `proxylens turns the OpenTelemetry spans of proxied requests into usage,
performance and cost analytics.

Usage:
  proxylens [serve] [flags]   run the server (the default command)
  proxylens demo [flags]      send realistic proxy traffic over OTLP
  proxylens loadgen [flags]   load-test an OTLP/gRPC endpoint
  proxylens backup --to DIR   take a backup (of a running server, or --data-dir)
  proxylens restore --from BACKUP --data-dir DIR
                              restore a backup into a new data directory
  proxylens audit verify      check the audit log's hash chain
  proxylens export --range 7d --format csv --out FILE
                              export records, hourly/daily summaries or cost models
  proxylens report --range 30d --format pdf --out FILE
                              a formatted report (PDF or HTML) for managers
  proxylens version           print the version

Run "proxylens COMMAND -h" for the flags of a command.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, stderr)
	case "demo":
		return demo(ctx, args, stdout, stderr)
	case "loadgen":
		return loadgen(ctx, args, stdout, stderr)
	case "backup":
		return backupCmd(ctx, args, stdout, stderr)
	case "restore":
		return restoreCmd(ctx, args, stdout, stderr)
	case "audit":
		return auditCmd(ctx, args, stdout, stderr)
	case "export":
		return exportCmd(ctx, args, stdout, stderr)
	case "report":
		return reportCmd(ctx, args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "proxylens", version())
		return nil
	case "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "proxylens: unknown command %q\n\n%s", cmd, usage)
	return errUsage
}
