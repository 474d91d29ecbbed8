package matmul

// packA copies rows i0..i0+rows-1, columns p0..p0+steps-1 of a (a[i*lda+p], or
// a[p*lda+i] if trans) into dst as panels of mr rows, each steps × mr consecutive
// elements, the layout the kernels read. A last, short panel keeps the stride
// mr; its missing rows are never read.
func packA(dst, a []float32, lda int, trans bool, i0, rows, p0, steps int) {
	for ir := 0; ir < rows; ir += mr {
		h := min(mr, rows-ir)
		panel := dst[ir*steps : (ir+mr)*steps]
		if trans && h == mr {
			// Array assignments copy inline, where copy would call memmove
			// for every 32 bytes.
			for p := range steps {
				*(*[mr]float32)(panel[p*mr:]) = *(*[mr]float32)(a[(p0+p)*lda+i0+ir:])
			}
		} else if trans {
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
		} else if w == nr {
			for p := range steps {
				*(*[nr]float32)(panel[p*nr:]) = *(*[nr]float32)(b[(p0+p)*ldb+j0+jr:])
			}
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

// transpose sets dst[j*ldd+i] = src[i*lds+j] for i < rows, j < cols: the
// 8×8 blocks with transposeBlocks, the edges one element at a time.
func transpose(dst []float32, ldd int, src []float32, lds, rows, cols int) {
	r8, c8 := rows/8, cols/8
	if r8 > 0 && c8 > 0 {
		transposeBlocks(dst, ldd, src, lds, r8, c8)
	}
	if j := 8 * c8; j < cols {
		transposeScalar(dst[j*ldd:], ldd, src[j:], lds, 8*r8, cols-j)
	}
	if i := 8 * r8; i < rows {
		transposeScalar(dst[i:], ldd, src[i*lds:], lds, rows-i, cols)
	}
}

// transposeBlocks transposes rows8×cols8 blocks of 8×8: in assembly where the
// CPU has AVX.
var transposeBlocks = func(dst []float32, ldd int, src []float32, lds, rows8, cols8 int) {
	transposeScalar(dst, ldd, src, lds, 8*rows8, 8*cols8)
}

func transposeScalar(dst []float32, ldd int, src []float32, lds, rows, cols int) {
	for i := range rows {
		for j, v := range src[i*lds : i*lds+cols] {
			dst[j*ldd+i] = v
		}
	}
}
