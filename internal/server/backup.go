package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/proxylens/proxylens/internal/backup"
	"github.com/proxylens/proxylens/pebblestore"
)

// Backup takes a backup now into root (empty: the configured backup
// directory), while ingest goes on: a Pebble checkpoint and the journal
// segments it lacks, so everything acknowledged before the call is in it.
// Then it runs the upload commands and prunes backups older than the
// retention policy's backup_days. One backup runs at a time.
func (s *Server) Backup(ctx context.Context, root, user string) (*backup.Backup, error) {
	s.backupMu.Lock()
	defer s.backupMu.Unlock()
	if root == "" {
		root = s.cfg.Backup.Dir
	}
	if err := backup.CheckDirs(root, s.cfg.DataDir); err != nil {
		return nil, err
	}
	start := time.Now()
	b, err := backup.Create(ctx, root, backup.CreateOptions{
		Snapshot: s.store.Snapshot,
		Archive:  s.cfg.Backup.Archive,
		Now:      s.opts.Now,
		Meta:     map[string]string{"proxylens_version": Version, "format_version": strconv.Itoa(pebblestore.FormatVersion)},
	})
	entry := pebblestore.AuditEntry{Time: s.opts.Now(), User: user, Action: "backup.create", Resource: root, Success: err == nil}
	if err != nil {
		entry.Error = err.Error()
		_ = s.store.Audit(entry)
		s.log.Error("backup failed", "dir", root, "err", err)
		return nil, err
	}
	entry.Detail = b.Path
	_ = s.store.Audit(entry)
	s.log.Info("backup written", "id", b.ID, "path", b.Path, "bytes", b.Size, "took", time.Since(start).Round(time.Millisecond))
	if err := backup.Upload(ctx, s.cfg.Backup.Upload, b, s.log); err != nil {
		s.log.Error("backup upload failed", "id", b.ID, "err", err)
	}
	if p, err := s.store.Retention(); err == nil {
		removed, err := backup.Prune(root, time.Duration(p.BackupDays)*24*time.Hour, s.opts.Now())
		if err != nil {
			s.log.Warn("prune backups", "dir", root, "err", err)
		}
		for _, r := range removed {
			s.log.Info("backup removed by retention", "path", r)
		}
	}
	return b, nil
}

// backupLoop takes the scheduled backups: one interval after the newest
// complete backup (at start: one interval after the newest one on disk,
// or a minute after start if there is none).
func (s *Server) backupLoop(ctx context.Context) {
	every := s.cfg.Backup.Interval
	next := s.opts.Now().Add(time.Minute)
	if infos, err := backup.List(s.cfg.Backup.Dir); err == nil {
		for _, in := range infos {
			if in.Status == backup.StatusComplete && in.Created.Add(every).After(next) {
				next = in.Created.Add(every)
			}
		}
	}
	for {
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if _, err := s.Backup(ctx, "", "scheduler"); err != nil && ctx.Err() != nil {
			return
		}
		next = s.opts.Now().Add(every)
	}
}

// backupRequest is POST /api/v1/admin/backup's optional body.
type backupRequest struct {
	// Dir is the root directory to write the backup to (default: the
	// configured backup directory).
	Dir string `json:"dir"`
}

func (h *adminHandler) postBackup(w http.ResponseWriter, r *http.Request) {
	var req backupRequest
	if r.ContentLength != 0 {
		if err := decodeStrict(r, &req); err != nil {
			writeAdminError(w, http.StatusBadRequest, "bad_data", err)
			return
		}
	}
	b, err := h.s.Backup(r.Context(), req.Dir, adminUser(r))
	if err != nil {
		code, typ := http.StatusInternalServerError, "internal"
		switch {
		case errors.Is(err, context.Canceled):
			code, typ = 499, "canceled"
		case errors.Is(err, backup.ErrInsideDataDir):
			code, typ = http.StatusBadRequest, "bad_data"
		}
		writeAdminError(w, code, typ, fmt.Errorf("backup: %w", err))
		return
	}
	writeAdminJSON(w, b)
}

func (h *adminHandler) listBackups(w http.ResponseWriter, _ *http.Request) {
	infos, err := backup.List(h.s.cfg.Backup.Dir)
	if err != nil {
		writeAdminError(w, http.StatusInternalServerError, "internal", err)
		return
	}
	if infos == nil {
		infos = []backup.Info{}
	}
	writeAdminJSON(w, infos)
}
