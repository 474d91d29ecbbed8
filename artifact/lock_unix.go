//go:build unix

package artifact

import (
	"errors"
	"os"
	"syscall"
)

// lockShared takes a shared flock on f, waiting for an evictor that holds
// it exclusively (only while it removes the file). flock locks belong to
// the open file, so they tell readers and evictors apart even within one
// process, and they go when the process does. On a file system without
// flock the entry is simply not held, as before there were locks.
func lockShared(f *os.File) {
	for errors.Is(syscall.Flock(int(f.Fd()), syscall.LOCK_SH), syscall.EINTR) {
	}
}

// tryLockExclusive takes an exclusive flock on f without waiting: false
// only while a reader holds it.
func tryLockExclusive(f *os.File) bool {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			return !errors.Is(err, syscall.EWOULDBLOCK)
		}
	}
}
