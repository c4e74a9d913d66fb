package inferencelog

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// ErrSpoolFull is returned by Spool.Append when the spool holds MaxBytes or
// more; the caller waits for a replay to free space (backpressure).
var ErrSpoolFull = errors.New("spool is full")

// ErrSpoolInUse is returned by OpenSpool when another process holds the
// folder's lock: two writers numbering files in one folder overwrite each
// other's batches.
var ErrSpoolInUse = errors.New("spool folder is in use by another process")

// Spool is a bounded on-disk queue of batches that could not be written to
// ClickHouse. Each batch is one file named by a sequence number, written to
// a temporary name, synced and renamed, so a crash leaves whole batches
// only. Batches are replayed oldest first. A Spool is safe for concurrent use.
//
// One process owns a spool folder: OpenSpool takes an exclusive flock on
// its lock file and Close releases it. A batch file that disappeared or no
// longer decodes is moved to the quarantine subfolder (see Quarantine)
// rather than blocking the batches behind it.
type Spool struct {
	dir      string
	maxBytes int64
	lock     *os.File

	mu    sync.Mutex
	next  uint64
	bytes int64
	files []spoolFile // oldest first
}

type spoolFile struct {
	seq  uint64
	size int64
}

const (
	spoolExt      = ".batch.json"
	spoolLockName = "LOCK"
	// QuarantineDir is the subfolder of a spool that unreadable batches are
	// moved to, for an operator to inspect.
	QuarantineDir = "quarantine"
)

// OpenSpool opens (creating) dir, locks it for this process and indexes the
// batches left there by an earlier run, so they are replayed first.
func OpenSpool(dir string, maxBytes int64) (*Spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating spool dir: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s := &Spool{dir: dir, maxBytes: maxBytes, next: 1, lock: lock}
	if err := s.index(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// lockDir takes an exclusive, non-blocking flock on dir/LOCK and writes the
// holder's pid into it, for the error a second process gets.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, spoolLockName)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening spool lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is locked by pid %s; give each instance its own clickhouse.spool_dir",
				ErrSpoolInUse, dir, strings.TrimSpace(string(holder)))
		}
		return nil, fmt.Errorf("locking spool %s: %w", dir, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

func (s *Spool) index() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("reading spool dir: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, ".tmp") {
			os.Remove(filepath.Join(s.dir, name)) // a write cut short by a crash
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
			return err
		}
		s.files = append(s.files, spoolFile{seq: seq, size: info.Size()})
		s.bytes += info.Size()
		s.next = max(s.next, seq+1)
	}
	slices.SortFunc(s.files, func(a, b spoolFile) int { return cmp.Compare(a.seq, b.seq) })
	return nil
}

// Close releases the folder's lock. The batches stay on disk for the next
// owner.
func (s *Spool) Close() error {
	if s.lock == nil {
		return nil
	}
	err := s.lock.Close() // closing the descriptor drops the flock
	s.lock = nil
	return err
}

// Len returns the number of spooled batches.
func (s *Spool) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.files)
}

// Full reports whether the spool holds its maximum: appends wait.
func (s *Spool) Full() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes >= s.maxBytes
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
	// Appends finish out of order only when they race; keep the index sorted.
	i, _ := slices.BinarySearchFunc(s.files, seq, func(f spoolFile, seq uint64) int { return cmp.Compare(f.seq, seq) })
	s.files = slices.Insert(s.files, i, spoolFile{seq: seq, size: int64(len(data))})
	s.bytes += int64(len(data))
	s.mu.Unlock()
	return nil
}

// Oldest reads the oldest batch without removing it. ok is false when the
// spool is empty. An error means the batch file is gone or does not decode;
// the caller moves it aside with Quarantine.
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
		return nil, seq, true, fmt.Errorf("reading spool batch %s: %w", s.path(seq), err)
	}
	b = &Batch{}
	if err := json.Unmarshal(data, b); err != nil {
		return nil, seq, true, fmt.Errorf("decoding spool batch %s: %w", s.path(seq), err)
	}
	return b, seq, true, nil
}

// Remove deletes batch seq after it was replayed.
func (s *Spool) Remove(seq uint64) error {
	if err := os.Remove(s.path(seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing spool batch %d: %w", seq, err)
	}
	s.forget(seq)
	return nil
}

// Quarantine takes batch seq out of the queue: the file, if it still
// exists, moves to the quarantine subfolder. It returns where the file went,
// or "" when there was no file to move.
func (s *Spool) Quarantine(seq uint64) (string, error) {
	defer s.forget(seq)
	src := s.path(seq)
	if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	qdir := filepath.Join(s.dir, QuarantineDir)
	if err := os.MkdirAll(qdir, 0o700); err != nil {
		return "", fmt.Errorf("creating spool quarantine: %w", err)
	}
	dst := filepath.Join(qdir, filepath.Base(src))
	if err := os.Rename(src, dst); err != nil {
		return "", fmt.Errorf("quarantining spool batch %s: %w", src, err)
	}
	return dst, nil
}

func (s *Spool) forget(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := slices.IndexFunc(s.files, func(f spoolFile) bool { return f.seq == seq }); i >= 0 {
		s.bytes -= s.files[i].size
		s.files = slices.Delete(s.files, i, i+1)
	}
}
