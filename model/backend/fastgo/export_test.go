package fastgo

// SetMatMul replaces the kernel (for benchmarks that take its arithmetic
// out of the timing) and returns what restores it.
func SetMatMul(f func(batch, m, n, k int, a []float32, strideA, lda int, transA bool, b []float32, strideB, ldb int, transB bool, c []float32, strideC, ldc int)) (restore func()) {
	old := matMul
	matMul = f
	return func() { matMul = old }
}
