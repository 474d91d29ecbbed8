package matmul

// Tile and cache-block sizes, the same on every path: the packed layout is one,
// and only the micro-kernel that reads it differs.
//
// An mr×nr tile of c is 24 zmm registers (8 rows of 3 vectors of 16), the most
// that leaves the AVX-512 kernel registers for a row of b and a broadcast of a;
// the AVX2 kernel covers it as four 4×24 tiles of 12 ymm registers. 48 columns
// and 8 rows also divide the 135M model's dimensions (576, 1536, 49152; 256
// tokens). A packed panel of a, mr×kc (8 KiB), stays in L1 while the kernel
// sweeps the kc×nc block of b (384 KiB), which stays in the 1 MiB or larger L2
// of every AVX-512 x86; mc rows per block keep the repacking of b at 1/mc of
// the work.
const (
	mr = 8
	nr = 48
	mc = 256
	kc = 256
	nc = 384
)

// tileFunc computes, for i < rows (1 <= rows <= mr) and j < cols (1 <= cols <= nr),
//
//	c[i*ldc+j] = fma(a[p*mr+i], b[p*ldb+j], ...) for p = 0, ..., steps-1 (steps >= 1)
//
// chained from 0, or from c[i*ldc+j] itself when accumulate is set. It may
// compute and store columns past cols up to its vector width: ragged edges go
// through a scratch tile.
type tileFunc func(rows, cols, steps int, a, b []float32, ldb int, c []float32, ldc int, accumulate bool)

// rowFunc sets, for j < n (n a multiple of nr),
//
//	c[j] = fma(a[(k-1)*lda], b[(k-1)*ldb+j], ... fma(a[0], b[j], c[j])) (k >= 1)
//
// the product of a single row, which is bound by memory: it reads rows of b in
// long sweeps, a few at a time, with c in the cache.
type rowFunc func(k int, a []float32, lda int, b []float32, ldb int, c []float32, n int)

// kernels are one path's micro-kernels.
type kernels struct {
	tile tileFunc
	row  rowFunc
}

// goTile is the portable micro-kernel: the same chains as the assembly kernels,
// one lane at a time, with fma32 in place of the hardware FMA.
func goTile(rows, cols, steps int, a, b []float32, ldb int, c []float32, ldc int, accumulate bool) {
	var acc [mr][nr]float32
	if accumulate {
		for i := range rows {
			copy(acc[i][:cols], c[i*ldc:])
		}
	}
	for p := range steps {
		bp := b[p*ldb : p*ldb+cols]
		for i, av := range a[p*mr : p*mr+rows] {
			row := acc[i][:cols]
			for j, bv := range bp {
				row[j] = fma32(av, bv, row[j])
			}
		}
	}
	for i := range rows {
		copy(c[i*ldc:i*ldc+cols], acc[i][:cols])
	}
}

// goRow is the portable rowFunc.
func goRow(k int, a []float32, lda int, b []float32, ldb int, c []float32, n int) {
	c = c[:n]
	for p := range k {
		av := a[p*lda]
		for j, bv := range b[p*ldb : p*ldb+n] {
			c[j] = fma32(av, bv, c[j])
		}
	}
}
