package matmul

// packA copies rows i0..i0+rows-1, columns p0..p0+steps-1 of a (a[i*lda+p], or
// a[p*lda+i] if trans) into dst as panels of mr rows, each steps × mr consecutive
// elements, the layout the kernels read. A last, short panel keeps the stride
// mr; its missing rows are never read.
func packA(dst, a []float32, lda int, trans bool, i0, rows, p0, steps int) {
	for ir := 0; ir < rows; ir += mr {
		h := min(mr, rows-ir)
		panel := dst[ir*steps : (ir+mr)*steps]
		if trans {
			for p := range steps {
				copy(panel[p*mr:p*mr+h], a[(p0+p)*lda+i0+ir:])
			}
		} else {
			transpose(panel, mr, a[(i0+ir)*lda+p0:], lda, h, steps)
		}
	}
}

// packB copies rows p0..p0+steps-1, columns j0..j0+cols-1 of b (b[p*ldb+j], or
// b[j*ldb+p] if trans) into dst as panels of nr columns, each steps × nr
// consecutive elements. A last, narrow panel is padded with zeros.
func packB(dst, b []float32, ldb int, trans bool, p0, steps, j0, cols int) {
	for jr := 0; jr < cols; jr += nr {
		w := min(nr, cols-jr)
		panel := dst[jr*steps : (jr+nr)*steps]
		if trans {
			transpose(panel, nr, b[(j0+jr)*ldb+p0:], ldb, w, steps)
		} else {
			for p := range steps {
				copy(panel[p*nr:p*nr+w], b[(p0+p)*ldb+j0+jr:])
			}
		}
		if w < nr {
			for p := range steps {
				clear(panel[p*nr+w : (p+1)*nr])
			}
		}
	}
}

// transpose sets dst[j*ldd+i] = src[i*lds+j] for i < rows, j < cols, by 8×8
// blocks where it can.
func transpose(dst []float32, ldd int, src []float32, lds, rows, cols int) {
	i := 0
	for ; i+8 <= rows; i += 8 {
		j := 0
		for ; j+8 <= cols; j += 8 {
			transposeBlock(dst[j*ldd+i:], ldd, src[i*lds+j:], lds)
		}
		if j < cols {
			transposeScalar(dst[j*ldd+i:], ldd, src[i*lds+j:], lds, 8, cols-j)
		}
	}
	if i < rows {
		transposeScalar(dst[i:], ldd, src[i*lds:], lds, rows-i, cols)
	}
}

// transposeBlock transposes one 8×8 block: in assembly where the CPU has AVX.
var transposeBlock = func(dst []float32, ldd int, src []float32, lds int) {
	transposeScalar(dst, ldd, src, lds, 8, 8)
}

func transposeScalar(dst []float32, ldd int, src []float32, lds, rows, cols int) {
	for i := range rows {
		for j, v := range src[i*lds : i*lds+cols] {
			dst[j*ldd+i] = v
		}
	}
}
