//go:build !amd64

package matmul

// registerAsm has no assembly kernels to add outside amd64.
func registerAsm() {}
