package drift

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// ErrSpoolFull is returned by Spool.Append when the spool holds MaxBytes or
// more; the caller waits for a replay to free space (backpressure).
var ErrSpoolFull = errors.New("spool is full")

// Spool is a bounded on-disk queue of batches that could not be written to
// ClickHouse. Each batch is one file named by a sequence number, written to
// a temporary name, synced and renamed, so a crash leaves whole batches
// only. Batches are replayed oldest first. A Spool is safe for concurrent use.
type Spool struct {
	dir      string
	maxBytes int64

	mu    sync.Mutex
	next  uint64
	bytes int64
	files []spoolFile // oldest first
}

type spoolFile struct {
	seq  uint64
	size int64
}

const spoolExt = ".batch.json"

// OpenSpool opens (creating) dir and indexes the batches left there by an
// earlier run, so they are replayed first.
func OpenSpool(dir string, maxBytes int64) (*Spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating spool dir: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading spool dir: %w", err)
	}
	s := &Spool{dir: dir, maxBytes: maxBytes, next: 1}
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, ".tmp") {
			os.Remove(filepath.Join(dir, name)) // a write cut short by a crash
			continue
		}
		if !strings.HasSuffix(name, spoolExt) {
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(name, spoolExt), 10, 64)
		if err != nil {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return nil, err
		}
		s.files = append(s.files, spoolFile{seq: seq, size: info.Size()})
		s.bytes += info.Size()
		s.next = max(s.next, seq+1)
	}
	sort.Slice(s.files, func(i, j int) bool { return s.files[i].seq < s.files[j].seq })
	return s, nil
}

// Len returns the number of spooled batches.
func (s *Spool) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.files)
}

// Bytes returns the spool's size on disk.
func (s *Spool) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}

func (s *Spool) path(seq uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%020d%s", seq, spoolExt))
}

// Append writes b durably at the tail. It returns ErrSpoolFull when the
// spool already holds maxBytes.
func (s *Spool) Append(b *Batch) error {
	data, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("encoding spool batch: %w", err)
	}
	s.mu.Lock()
	if s.bytes >= s.maxBytes {
		s.mu.Unlock()
		return ErrSpoolFull
	}
	seq := s.next
	s.next++
	s.mu.Unlock()

	path := s.path(seq)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("spool write: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	s.mu.Lock()
	s.files = append(s.files, spoolFile{seq: seq, size: int64(len(data))})
	sort.Slice(s.files, func(i, j int) bool { return s.files[i].seq < s.files[j].seq })
	s.bytes += int64(len(data))
	s.mu.Unlock()
	return nil
}

// Oldest reads the oldest batch without removing it. ok is false when the
// spool is empty.
func (s *Spool) Oldest() (b *Batch, seq uint64, ok bool, err error) {
	s.mu.Lock()
	if len(s.files) == 0 {
		s.mu.Unlock()
		return nil, 0, false, nil
	}
	seq = s.files[0].seq
	s.mu.Unlock()
	data, err := os.ReadFile(s.path(seq))
	if err != nil {
		return nil, seq, true, fmt.Errorf("reading spool batch %d: %w", seq, err)
	}
	b = &Batch{}
	if err := json.Unmarshal(data, b); err != nil {
		return nil, seq, true, fmt.Errorf("decoding spool batch %d (%s): %w", seq, s.path(seq), err)
	}
	return b, seq, true, nil
}

// Remove deletes batch seq after it was replayed.
func (s *Spool) Remove(seq uint64) error {
	if err := os.Remove(s.path(seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing spool batch %d: %w", seq, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.files {
		if f.seq == seq {
			s.bytes -= f.size
			s.files = append(s.files[:i], s.files[i+1:]...)
			break
		}
	}
	return nil
}
