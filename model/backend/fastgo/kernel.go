package fastgo

// matMul is the matrix kernel fastgo runs float32 DotGenerals on, with
// model/matmul's signature:
//
//	c = a·b for row-major float32 matrices with strides: a[i*lda + p] for
//	i < m, p < k (transA: a[p*lda + i]); b[p*ldb + j] (transB: b[j*ldb + p]);
//	c[i*ldc + j] for j < n, overwritten, not accumulated.
//
// It must be deterministic: the same operands give the same bits whatever
// else runs. It is a variable so that the optimised kernel replaces the
// stand-in in one place.
var matMul = naiveMul

// naiveMul is matMul's plain-Go stand-in: each element is summed over
// p = 0..k-1 in order, one rounded multiply and one rounded add at a time
// (the float32 conversion of the product keeps the compiler from fusing
// them into an FMA, which would round differently on some machines). The
// loop order only follows the operands' layout; the sums are the same.
func naiveMul(m, n, k int, a []float32, lda int, transA bool, b []float32, ldb int, transB bool, c []float32, ldc int) {
	at := func(i, p int) float32 {
		if transA {
			return a[p*lda+i]
		}
		return a[i*lda+p]
	}
	for i := range m {
		row := c[i*ldc : i*ldc+n]
		if transB {
			for j := range row {
				var s float32
				for p := range k {
					s += float32(at(i, p) * b[j*ldb+p])
				}
				row[j] = s
			}
			continue
		}
		clear(row)
		for p := range k {
			x := at(i, p)
			bp := b[p*ldb : p*ldb+n]
			for j, y := range bp {
				row[j] += float32(x * y)
			}
		}
	}
}
