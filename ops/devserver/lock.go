package devserver

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DBLockedError reports a database file whose lock is held by another server,
// in this process or another one.
type DBLockedError struct {
	DBFile   string
	LockFile string
	PID      int // the holder's process ID as written in the lock file; 0 if unknown
}

// Error returns the user-facing message, which names the file and the holder.
func (e *DBLockedError) Error() string {
	holder := "another process"
	if e.PID == os.Getpid() {
		holder = "another server in this process"
	} else if e.PID > 0 {
		holder = "process " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("database file %s is already in use by %s (lock %s is held; is another \"alignflow dev\" running on it? stop it or choose another database file)", e.DBFile, holder, e.LockFile)
}

// Is makes errors.Is(err, ErrDBLocked) true.
func (e *DBLockedError) Is(target error) bool { return target == ErrDBLocked }

// fileLock is an exclusive lock on DBFile+".lock", held while a server uses
// the database file.
type fileLock struct {
	f *os.File
}

// lockPath returns the lock file of a database file.
func lockPath(dbFile string) string { return dbFile + ".lock" }

// acquireLock creates the database file's parent directories and takes its
// lock without blocking.
func acquireLock(dbFile string) (*fileLock, error) {
	if err := os.MkdirAll(filepath.Dir(dbFile), 0o755); err != nil {
		return nil, fmt.Errorf("devserver: create directory for database file: %w", err)
	}
	path := lockPath(dbFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("devserver: open lock file: %w", err)
	}
	locked, err := tryLock(f)
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("devserver: lock %s: %w", path, err)
	}
	if !locked {
		pid := readPID(f)
		_ = f.Close()
		return nil, &DBLockedError{DBFile: dbFile, LockFile: path, PID: pid}
	}
	// The PID is informational (for the error above); failing to write it is
	// harmless.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &fileLock{f: f}, nil
}

// release unlocks and closes the lock file. The file itself is left in place:
// removing it would race with a server that is opening it.
func (l *fileLock) release() error {
	if l == nil || l.f == nil {
		return nil
	}
	uerr := unlock(l.f)
	cerr := l.f.Close()
	l.f = nil
	if uerr != nil {
		return fmt.Errorf("devserver: unlock database file: %w", uerr)
	}
	if cerr != nil {
		return fmt.Errorf("devserver: close lock file: %w", cerr)
	}
	return nil
}

func readPID(f *os.File) int {
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil {
		return 0
	}
	return pid
}
