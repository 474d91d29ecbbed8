// Command asm generates the amd64 micro-kernels of package matmul with avo:
//
//	cd model/matmul && go generate
//
// It lives in a module of its own so that the main module does not depend on avo.
//
// Each kernel computes one tile of rows×(nv vectors) outputs of c, for any rows
// from 1 to mr, over kc steps of the contracted dimension:
//
//	acc[i][j] = fma(a[p*mr+i], b[p*ldb+j], acc[i][j])	for p = 0, 1, ..., kc-1
//
// starting from zero, or from c when accumulate is set, and stores acc into c.
// Every output lane runs its own chain of fused multiply-adds in the order of p,
// so a kernel's result does not depend on the tile sizes, on the vector width or
// on which kernel ran: that is what makes package matmul deterministic.
package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

func main() {
	// 32 zmm registers: 8 rows × 3 vectors = 24 accumulators, 3 for the row of
	// b and 1 for the broadcast element of a.
	kernel("kernelAVX512", 8, 8, 3, S512, func(v Register) { VPXORD(v, v, v) })
	// 16 ymm registers: 4 rows × 3 vectors = 12 accumulators, 3 + 1 as above. It
	// reads the same packed panels as kernelAVX512, a half of each at a time.
	kernel("kernelAVX2", 4, 8, 3, S256, func(v Register) { VXORPS(v, v, v) })
	row("rowAVX512", S512, 4)
	row("rowAVX2", S256, 4)
	transpose()
	Generate()
}

// kernel emits one function that branches on vecs (1 <= vecs <= nv) and rows to
// a body unrolled for them, so that edge tiles cost no more than their size; a
// holds astride elements per step of p.
func kernel(name string, mr, astride, nv int, size Spec, zero func(Register)) {
	TEXT(name, NOSPLIT, "func(rows, vecs, kc int, a, b *float32, ldb int, c *float32, ldc int, accumulate bool)")
	Doc(
		fmt.Sprintf("%s computes a rows×(%d·vecs) tile (1 <= rows <= %d, 1 <= vecs <= %d, kc >= 1): a is", name, size.Size()/4, mr, nv),
		fmt.Sprintf("packed with %d elements per step of p, b has ldb elements between steps, c has ldc", astride),
		"between rows.",
	)
	Pragma("noescape")
	vecs := Load(Param("vecs"), GP64())
	for v := nv; v >= 1; v-- {
		CMPQ(vecs, Imm(uint64(v)))
		JEQ(LabelRef(fmt.Sprintf("vecs%d", v)))
	}
	RET()
	for v := nv; v >= 1; v-- {
		Label(fmt.Sprintf("vecs%d", v))
		rows := Load(Param("rows"), GP64())
		for r := mr; r >= 1; r-- {
			CMPQ(rows, Imm(uint64(r)))
			JEQ(LabelRef(fmt.Sprintf("rows%dx%d", r, v)))
		}
		RET()
	}
	for v := nv; v >= 1; v-- {
		for r := mr; r >= 1; r-- {
			Label(fmt.Sprintf("rows%dx%d", r, v))
			body(fmt.Sprintf("%dx%d", r, v), r, astride, v, size, zero)
		}
	}
}

func body(id string, r, astride, nv int, size Spec, zero func(Register)) {
	vb := int(size.Size()) // bytes per vector
	vec := func() VecVirtual {
		if size == S512 {
			return ZMM()
		}
		return YMM()
	}
	kc := Load(Param("kc"), GP64())
	a := Load(Param("a"), GP64())
	b := Load(Param("b"), GP64())
	ldb := Load(Param("ldb"), GP64())
	SHLQ(U8(2), ldb)
	c := Load(Param("c"), GP64())
	ldc := Load(Param("ldc"), GP64())
	SHLQ(U8(2), ldc)

	acc := make([][]VecVirtual, r)
	for i := range acc {
		acc[i] = make([]VecVirtual, nv)
		for v := range acc[i] {
			acc[i][v] = vec()
		}
	}
	// eachC visits the accumulators with their places in c.
	eachC := func(f func(m Mem, x VecVirtual)) {
		p := GP64()
		MOVQ(c, p)
		for i := range acc {
			if i > 0 {
				ADDQ(ldc, p)
			}
			for v, x := range acc[i] {
				f(Mem{Base: p, Disp: v * vb}, x)
			}
		}
	}

	accumulate := Load(Param("accumulate"), GP8())
	TESTB(accumulate, accumulate)
	JZ(LabelRef("zero" + id))
	eachC(func(m Mem, x VecVirtual) { VMOVUPS(m, x) })
	JMP(LabelRef("loop" + id))
	Label("zero" + id)
	for i := range acc {
		for _, x := range acc[i] {
			zero(x)
		}
	}

	Label("loop" + id)
	bv := make([]VecVirtual, nv)
	for v := range bv {
		bv[v] = vec()
		VMOVUPS(Mem{Base: b, Disp: v * vb}, bv[v])
	}
	for i := range acc {
		s := vec()
		VBROADCASTSS(Mem{Base: a, Disp: 4 * i}, s)
		for v, x := range acc[i] {
			VFMADD231PS(bv[v], s, x)
		}
	}
	ADDQ(U32(4*astride), a)
	ADDQ(ldb, b)
	DECQ(kc)
	JNZ(LabelRef("loop" + id))

	eachC(func(m Mem, x VecVirtual) { VMOVUPS(x, m) })
	VZEROUPPER()
	RET()
}

// row emits a kernel for a single row of c, which keeps the row in memory rather
// than in registers, so that it reads rows of b in long sweeps: a product by one
// row is bound by memory, and long sequential reads are what the prefetchers
// serve best. It takes unroll steps of p per sweep, so that c is loaded and
// stored once for unroll rows of b; each lane still chains its FMAs in the
// order of p.
func row(name string, size Spec, unroll int) {
	TEXT(name, NOSPLIT, "func(k int, a *float32, lda int, b *float32, ldb int, c *float32, n int)")
	Pragma("noescape")
	Doc(
		fmt.Sprintf("%s sets c[j] = fma(a[(k-1)*lda], b[(k-1)*ldb+j], ... fma(a[0], b[j], c[j])) for", name),
		fmt.Sprintf("j < n (k >= 1, n a multiple of %d).", size.Size()/4),
	)
	vb := int(size.Size())
	vec := func() VecVirtual {
		if size == S512 {
			return ZMM()
		}
		return YMM()
	}
	k := Load(Param("k"), GP64())
	a := Load(Param("a"), GP64())
	lda := Load(Param("lda"), GP64())
	SHLQ(U8(2), lda)
	b := Load(Param("b"), GP64())
	ldb := Load(Param("ldb"), GP64())
	SHLQ(U8(2), ldb)
	c := Load(Param("c"), GP64())
	n := Load(Param("n"), GP64())
	SHLQ(U8(2), n) // bytes

	// sweep adds steps rows of b, from b on, to c.
	sweep := func(label string, steps int) {
		s := make([]VecVirtual, steps)
		rows := make([]Register, steps)
		for u := range s {
			s[u] = vec()
			VBROADCASTSS(Mem{Base: a}, s[u])
			ADDQ(lda, a)
			rows[u] = GP64()
			if u == 0 {
				MOVQ(b, rows[u])
			} else {
				LEAQ(Mem{Base: rows[u-1], Index: ldb, Scale: 1}, rows[u])
			}
		}
		j := GP64()
		XORQ(j, j)
		Label(label)
		y := vec()
		VMOVUPS(Mem{Base: c, Index: j, Scale: 1}, y)
		for u := range s {
			x := vec()
			VMOVUPS(Mem{Base: rows[u], Index: j, Scale: 1}, x)
			VFMADD231PS(x, s[u], y)
		}
		VMOVUPS(y, Mem{Base: c, Index: j, Scale: 1})
		ADDQ(U8(vb), j)
		CMPQ(j, n)
		JNE(LabelRef(label))
		LEAQ(Mem{Base: rows[steps-1], Index: ldb, Scale: 1}, b)
	}
	Label("sweeps")
	CMPQ(k, U8(unroll))
	JL(LabelRef("tail"))
	sweep("cols", unroll)
	SUBQ(U8(unroll), k)
	JMP(LabelRef("sweeps"))
	Label("tail")
	TESTQ(k, k)
	JZ(LabelRef("done"))
	sweep("tailcols", 1)
	DECQ(k)
	JMP(LabelRef("tail"))
	Label("done")
	VZEROUPPER()
	RET()
}

// transpose emits a transpose by 8×8 blocks in ymm registers, for packing the
// operands whose contracted dimension runs along their rows. One call does a
// whole panel: a call per block would cost as much as the block.
func transpose() {
	TEXT("transpose8", NOSPLIT, "func(dst *float32, ldd int, src *float32, lds int, rows8, cols8 int)")
	Pragma("noescape")
	Doc("transpose8 sets dst[j*ldd+i] = src[i*lds+j] for i < 8*rows8, j < 8*cols8 (rows8, cols8 >= 1).")
	dstCol := Load(Param("dst"), GP64())
	ldd := Load(Param("ldd"), GP64())
	SHLQ(U8(2), ldd)
	srcRow := Load(Param("src"), GP64())
	lds := Load(Param("lds"), GP64())
	SHLQ(U8(2), lds)
	rows8 := Load(Param("rows8"), GP64())
	ldd3, lds3 := GP64(), GP64()
	LEAQ(Mem{Base: ldd, Index: ldd, Scale: 2}, ldd3)
	LEAQ(Mem{Base: lds, Index: lds, Scale: 2}, lds3)
	// Four rows from base, four from base+4·ld.
	rowsAt := func(base, ld, ld3 Register) []Mem {
		hi := GP64()
		LEAQ(Mem{Base: base, Index: ld, Scale: 4}, hi)
		var m []Mem
		for _, b := range []Register{base, hi} {
			m = append(m, Mem{Base: b}, Mem{Base: b, Index: ld, Scale: 1}, Mem{Base: b, Index: ld, Scale: 2}, Mem{Base: b, Index: ld3, Scale: 1})
		}
		return m
	}

	Label("rows")
	src, dst := GP64(), GP64()
	MOVQ(srcRow, src)
	MOVQ(dstCol, dst)
	cols8 := Load(Param("cols8"), GP64())
	Label("block")
	r := make([]VecVirtual, 8)
	for i, m := range rowsAt(src, lds, lds3) {
		r[i] = YMM()
		VMOVUPS(m, r[i])
	}
	// Within each 128-bit lane: t interleaves pairs of rows, s gathers four.
	t := make([]VecVirtual, 8)
	for i := 0; i < 8; i += 2 {
		t[i], t[i+1] = YMM(), YMM()
		VUNPCKLPS(r[i+1], r[i], t[i])
		VUNPCKHPS(r[i+1], r[i], t[i+1])
	}
	s := make([]VecVirtual, 8)
	for h := 0; h < 8; h += 4 {
		for i := 0; i < 2; i++ {
			s[h+2*i], s[h+2*i+1] = YMM(), YMM()
			VSHUFPS(U8(0x44), t[h+i+2], t[h+i], s[h+2*i])
			VSHUFPS(U8(0xee), t[h+i+2], t[h+i], s[h+2*i+1])
		}
	}
	// Across lanes: column j is s[j%4]'s and s[4+j%4]'s low (j < 4) or high halves.
	for j, m := range rowsAt(dst, ldd, ldd3) {
		halves := U8(0x20)
		if j >= 4 {
			halves = 0x31
		}
		out := YMM()
		VPERM2F128(halves, s[4+j%4], s[j%4], out)
		VMOVUPS(out, m)
	}
	ADDQ(U8(32), src)
	LEAQ(Mem{Base: dst, Index: ldd, Scale: 8}, dst)
	DECQ(cols8)
	JNZ(LabelRef("block"))

	LEAQ(Mem{Base: srcRow, Index: lds, Scale: 8}, srcRow)
	ADDQ(U8(32), dstCol)
	DECQ(rows8)
	JNZ(LabelRef("rows"))
	VZEROUPPER()
	RET()
}
