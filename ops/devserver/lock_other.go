//go:build !unix

package devserver

import "os"

// tryLock is a no-op where flock is unavailable: the database file is not
// protected against a second server.
func tryLock(*os.File) (bool, error) { return true, nil }

func unlock(*os.File) error { return nil }
