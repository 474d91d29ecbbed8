package matmul

import "golang.org/x/sys/cpu"

// registerAsm adds the assembly kernels this CPU can run, and the assembly
// transpose for packing.
func registerAsm() {
	if cpu.X86.HasAVX {
		transposeBlock = transposeAsm
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		tiles[PathAVX2] = avx2Tile
	}
	if cpu.X86.HasAVX512F {
		tiles[PathAVX512] = avx512Tile
	}
}

// checkTile panics unless the tile lies inside its slices: the assembly reads
// and writes through raw pointers.
func checkTile(rows, steps int, a, b []float32, ldb int, c []float32, ldc int) {
	if rows < 1 || rows > mr || steps < 1 || ldb < nr || ldc < nr {
		panic("matmul: bad tile")
	}
	_ = a[(steps-1)*mr+rows-1]
	_ = b[(steps-1)*ldb+nr-1]
	_ = c[(rows-1)*ldc+nr-1]
}

func avx512Tile(rows, steps int, a, b []float32, ldb int, c []float32, ldc int, accumulate bool) {
	checkTile(rows, steps, a, b, ldb, c, ldc)
	kernelAVX512(rows, steps, &a[0], &b[0], ldb, &c[0], ldc, accumulate)
}

// avx2Tile covers the mr×nr tile with kernelAVX2's 4×24 ones.
func avx2Tile(rows, steps int, a, b []float32, ldb int, c []float32, ldc int, accumulate bool) {
	checkTile(rows, steps, a, b, ldb, c, ldc)
	for i := 0; i < rows; i += 4 {
		for j := 0; j < nr; j += 24 {
			kernelAVX2(min(4, rows-i), steps, &a[i], &b[j], ldb, &c[i*ldc+j], ldc, accumulate)
		}
	}
}

func transposeAsm(dst []float32, ldd int, src []float32, lds int) {
	_ = dst[7*ldd+7]
	_ = src[7*lds+7]
	transpose8(&dst[0], ldd, &src[0], lds)
}
