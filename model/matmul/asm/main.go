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
	transpose()
	Generate()
}

// kernel emits one function that branches on rows to a body unrolled for that
// number of rows, so that edge tiles cost no more than their rows.
// a holds astride elements per step of p.
func kernel(name string, mr, astride, nv int, size Spec, zero func(Register)) {
	TEXT(name, NOSPLIT, "func(rows, kc int, a, b *float32, ldb int, c *float32, ldc int, accumulate bool)")
	Doc(
		fmt.Sprintf("%s computes a rows×%d tile (1 <= rows <= %d, kc >= 1): a is packed with", name, nv*int(size.Size())/4, mr),
		fmt.Sprintf("%d elements per step of p, b has ldb elements between steps, c has ldc between rows.", astride),
	)
	Pragma("noescape")
	rows := Load(Param("rows"), GP64())
	for r := mr; r >= 1; r-- {
		CMPQ(rows, Imm(uint64(r)))
		JEQ(LabelRef(fmt.Sprintf("rows%d", r)))
	}
	RET()
	for r := mr; r >= 1; r-- {
		Label(fmt.Sprintf("rows%d", r))
		body(r, astride, nv, size, zero)
	}
}

func body(r, astride, nv int, size Spec, zero func(Register)) {
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
	JZ(LabelRef(fmt.Sprintf("zero%d", r)))
	eachC(func(m Mem, x VecVirtual) { VMOVUPS(m, x) })
	JMP(LabelRef(fmt.Sprintf("loop%d", r)))
	Label(fmt.Sprintf("zero%d", r))
	for i := range acc {
		for _, x := range acc[i] {
			zero(x)
		}
	}

	Label(fmt.Sprintf("loop%d", r))
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
	JNZ(LabelRef(fmt.Sprintf("loop%d", r)))

	eachC(func(m Mem, x VecVirtual) { VMOVUPS(x, m) })
	VZEROUPPER()
	RET()
}

// transpose emits an 8×8 transpose in ymm registers, for packing the operands
// whose contracted dimension runs along their rows.
func transpose() {
	TEXT("transpose8", NOSPLIT, "func(dst *float32, ldd int, src *float32, lds int)")
	Pragma("noescape")
	Doc("transpose8 sets dst[j*ldd+i] = src[i*lds+j] for i, j < 8.")
	dst := Load(Param("dst"), GP64())
	ldd := Load(Param("ldd"), GP64())
	SHLQ(U8(2), ldd)
	src := Load(Param("src"), GP64())
	lds := Load(Param("lds"), GP64())
	SHLQ(U8(2), lds)
	r := make([]VecVirtual, 8)
	for i := range r {
		r[i] = YMM()
		VMOVUPS(Mem{Base: src}, r[i])
		if i < 7 {
			ADDQ(lds, src)
		}
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
	for j := 0; j < 8; j++ {
		halves := U8(0x20)
		if j >= 4 {
			halves = 0x31
		}
		out := YMM()
		VPERM2F128(halves, s[4+j%4], s[j%4], out)
		VMOVUPS(out, Mem{Base: dst})
		if j < 7 {
			ADDQ(ldd, dst)
		}
	}
	VZEROUPPER()
	RET()
}
