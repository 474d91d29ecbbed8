package fastgo

// SetMatMul replaces the kernel (for benchmarks that take its arithmetic
// out of the timing) and returns what restores it.
func SetMatMul(f func(m, n, k int, a []float32, lda int, transA bool, b []float32, ldb int, transB bool, c []float32, ldc int)) (restore func()) {
	old := matMul
	matMul = f
	return func() { matMul = old }
}
