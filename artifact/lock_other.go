//go:build !unix

package artifact

import "os"

// Without flock the cache takes no locks: Windows refuses to remove a file
// that is open, which spares entries in use all the same.
func lockShared(*os.File) {}

func tryLockExclusive(*os.File) bool { return true }
