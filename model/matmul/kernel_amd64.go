package matmul

import "golang.org/x/sys/cpu"

// registerAsm adds the assembly kernels this CPU can run, and the assembly
// transpose for packing.
func registerAsm() {
	if cpu.X86.HasAVX {
		transposeBlocks = transposeAsm
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		paths[PathAVX2] = &kernels{avx2Tile, avx2Row}
	}
	if cpu.X86.HasAVX512F {
		paths[PathAVX512] = &kernels{avx512Tile, avx512Row}
	}
}

// checkTile panics unless the tile, up to its full width, lies inside its
// slices: the assembly reads and writes through raw pointers.
func checkTile(rows, cols, steps int, a, b []float32, ldb int, c []float32, ldc int) {
	if rows < 1 || rows > mr || cols < 1 || cols > nr || steps < 1 || ldb < nr || ldc < nr {
		panic("matmul: bad tile")
	}
	_ = a[(steps-1)*mr+rows-1]
	_ = b[(steps-1)*ldb+nr-1]
	_ = c[(rows-1)*ldc+nr-1]
}

func avx512Tile(rows, cols, steps int, a, b []float32, ldb int, c []float32, ldc int, accumulate bool) {
	checkTile(rows, cols, steps, a, b, ldb, c, ldc)
	kernelAVX512(rows, ceilDiv(cols, 16), steps, &a[0], &b[0], ldb, &c[0], ldc, accumulate)
}

// avx2Tile covers the tile with kernelAVX2's tiles of up to 4×24.
func avx2Tile(rows, cols, steps int, a, b []float32, ldb int, c []float32, ldc int, accumulate bool) {
	checkTile(rows, cols, steps, a, b, ldb, c, ldc)
	for i := 0; i < rows; i += 4 {
		for j := 0; j < cols; j += 24 {
			kernelAVX2(min(4, rows-i), min(3, ceilDiv(cols-j, 8)), steps, &a[i], &b[j], ldb, &c[i*ldc+j], ldc, accumulate)
		}
	}
}

// checkRow panics unless the row lies inside its slices.
func checkRow(k int, a []float32, lda int, b []float32, ldb int, c []float32, n int) {
	if k < 1 || n < nr || n%nr != 0 || lda < 1 || ldb < n {
		panic("matmul: bad row")
	}
	_ = a[(k-1)*lda]
	_ = b[(k-1)*ldb+n-1]
	_ = c[n-1]
}

func avx512Row(k int, a []float32, lda int, b []float32, ldb int, c []float32, n int) {
	checkRow(k, a, lda, b, ldb, c, n)
	rowAVX512(k, &a[0], lda, &b[0], ldb, &c[0], n)
}

func avx2Row(k int, a []float32, lda int, b []float32, ldb int, c []float32, n int) {
	checkRow(k, a, lda, b, ldb, c, n)
	rowAVX2(k, &a[0], lda, &b[0], ldb, &c[0], n)
}

func transposeAsm(dst []float32, ldd int, src []float32, lds, rows8, cols8 int) {
	if rows8 < 1 || cols8 < 1 || ldd < 8*rows8 || lds < 8*cols8 {
		panic("matmul: bad transpose")
	}
	_ = dst[(8*cols8-1)*ldd+8*rows8-1]
	_ = src[(8*rows8-1)*lds+8*cols8-1]
	transpose8(&dst[0], ldd, &src[0], lds, rows8, cols8)
}
