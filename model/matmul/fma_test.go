package matmul

import (
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

// The classic double-rounding case: x·y+z lies just below the float32 halfway
// point between 1+2^-23 and 1+2^-22, within half a float64 ulp of it, so rounding
// to float64 first lands on the halfway point and then on the even neighbour.
func TestFMA32RoundsOnce(t *testing.T) {
	x := float32(1 + 0x1p-23)
	y := float32(0x1p-24 * (1 - 0x1p-23))
	z := float32(1 + 0x1p-23)
	if twice := float32(math.FMA(float64(x), float64(y), float64(z))); twice != 1+0x1p-22 {
		t.Fatalf("the example no longer rounds twice: %g", twice)
	}
	if got := fma32(x, y, z); got != z {
		t.Fatalf("fma32 = %b, want %b", math.Float32bits(got), math.Float32bits(z))
	}
}

// fmaGrid is a batch of FMA inputs shaped like a kernel's tile: every x[i] meets
// every y[j], with its own addend z[i*len(y)+j].
type fmaGrid struct{ x, y, z []float32 }

// The kinds of grids: each stresses one part of the rounding.
const (
	gridBits      = iota // random bit patterns, NaNs included
	gridCancel           // z close to -x·y: cancellation, tiny and zero results
	gridHalfway          // x·y+z within a float64 ulp of a float32 halfway point
	gridSpecial          // zeros of both signs, infinities, extremes, NaN
	gridSubnormal        // products and addends around the subnormal range
	gridOverflow         // sums around the largest float32
	numGridKinds
)

func newFMAGrid(rng *rand.Rand, kind, rows, cols int) fmaGrid {
	g := fmaGrid{make([]float32, rows), make([]float32, cols), make([]float32, rows*cols)}
	sign := func() float64 { return float64(1 - 2*rng.IntN(2)) }
	// mant returns 1 + a random 23-bit fraction.
	mant := func() float64 { return 1 + float64(rng.IntN(1<<23))*0x1p-23 }
	each := func(f func(i, j int) float32) {
		for i := range rows {
			for j := range cols {
				g.z[i*cols+j] = f(i, j)
			}
		}
	}
	switch kind {
	case gridBits:
		for _, s := range [][]float32{g.x, g.y, g.z} {
			for i := range s {
				s[i] = math.Float32frombits(rng.Uint32())
			}
		}
	case gridCancel:
		for i := range g.x {
			g.x[i] = float32(sign() * math.Ldexp(mant(), rng.IntN(40)-20))
		}
		for j := range g.y {
			g.y[j] = float32(sign() * math.Ldexp(mant(), rng.IntN(40)-20))
		}
		each(func(i, j int) float32 {
			p := -(g.x[i] * g.y[j])
			return math.Float32frombits(math.Float32bits(p) + uint32(rng.IntN(7)) - 3)
		})
	case gridHalfway:
		// x·y = ±2^(a+b)·(1 - k²·2^-46) and half an ulp of z is 2^(a+b): the sum
		// is k²·2^(a+b-46) from a halfway point, under half a float64 ulp for
		// k < 362, and exactly on it for k = 0.
		k := float64(rng.IntN(362))
		ea := make([]int, rows)
		for i := range g.x {
			ea[i] = rng.IntN(200) - 100
			g.x[i] = float32(sign() * math.Ldexp(1+k*0x1p-23, ea[i]))
		}
		eb := make([]int, cols)
		for j := range g.y {
			eb[j] = rng.IntN(140) - 76
			g.y[j] = float32(sign() * math.Ldexp(1-k*0x1p-23, eb[j]))
		}
		each(func(i, j int) float32 {
			m := float64(rng.IntN(1 << 24))
			return float32(sign() * math.Ldexp(m, ea[i]+eb[j]+1))
		})
	case gridSpecial:
		specials := []float32{0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1)),
			math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32, -math.SmallestNonzeroFloat32,
			0x1p-126, -0x1p-126, 1, -1, 1 + 0x1p-23, 0x1p64, 0x1p-64, float32(math.NaN())}
		pick := func() float32 {
			if rng.IntN(4) == 0 {
				return float32(sign() * math.Ldexp(mant(), rng.IntN(60)-30))
			}
			return specials[rng.IntN(len(specials))]
		}
		for _, s := range [][]float32{g.x, g.y, g.z} {
			for i := range s {
				s[i] = pick()
			}
		}
	case gridSubnormal:
		for i := range g.x {
			g.x[i] = float32(sign() * math.Ldexp(mant(), rng.IntN(60)-90))
		}
		for j := range g.y {
			g.y[j] = float32(sign() * math.Ldexp(mant(), rng.IntN(60)-90))
		}
		each(func(i, j int) float32 {
			return math.Float32frombits(rng.Uint32()&0x80ffffff | uint32(rng.IntN(2))<<23)
		})
	case gridOverflow:
		for i := range g.x {
			g.x[i] = float32(sign() * math.Ldexp(mant(), 63+rng.IntN(2)))
		}
		for j := range g.y {
			g.y[j] = float32(sign() * math.Ldexp(mant(), 63+rng.IntN(2)))
		}
		each(func(i, j int) float32 {
			return float32(sign() * math.Ldexp(mant(), 120+rng.IntN(8)))
		})
	}
	return g
}

// sameFMA reports whether got is the FMA result want of x, y, z: the same bits,
// or both NaN when an input was a NaN (CPUs differ on which NaN they return).
func sameFMA(got, want, x, y, z float32) bool {
	if math.Float32bits(got) == math.Float32bits(want) {
		return true
	}
	inputNaN := x != x || y != y || z != z
	return inputNaN && got != got && want != want
}

// TestFMA32MatchesHardware runs fma32 against the FMA of every assembly kernel
// (one step of p, accumulating into the given addends) on millions of inputs.
func TestFMA32MatchesHardware(t *testing.T) {
	calls := 1 << 13
	if testing.Short() {
		calls = 1 << 9
	}
	tested := false
	for _, p := range Available() {
		if p == PathGo {
			continue
		}
		tested = true
		rng := rand.New(rand.NewPCG(1, uint64(p)))
		checked, mismatches := 0, 0
		for call := range calls {
			g := newFMAGrid(rng, call%numGridKinds, mr, nr)
			c := append([]float32(nil), g.z...)
			paths[p].tile(mr, nr, 1, g.x, g.y, nr, c, nr, true)
			for i, x := range g.x {
				for j, y := range g.y {
					z, want := g.z[i*nr+j], c[i*nr+j]
					for _, f := range []struct {
						name string
						fma  func(x, y, z float32) float32
					}{{"fma32", fma32}, {"fma32Odd", fma32Odd}} {
						checked++
						if got := f.fma(x, y, z); !sameFMA(got, want, x, y, z) {
							if mismatches++; mismatches <= 10 {
								t.Errorf("%v: fma(%08x, %08x, %08x) = %08x, %s = %08x", p, math.Float32bits(x),
									math.Float32bits(y), math.Float32bits(z), math.Float32bits(want), f.name, math.Float32bits(got))
							}
						}
					}
				}
			}
		}
		t.Logf("%v: %d checks, %d mismatches", p, checked, mismatches)
	}
	if !tested {
		t.Skip("no hardware FMA kernel on this CPU")
	}
}

// TestFMA32MatchesExact checks fma32 against x·y+z computed exactly with
// math/big and rounded once, which needs no FMA hardware.
func TestFMA32MatchesExact(t *testing.T) {
	n := 1 << 17
	if testing.Short() {
		n = 1 << 13
	}
	rng := rand.New(rand.NewPCG(2, 2))
	checked := 0
	for checked < n {
		g := newFMAGrid(rng, rng.IntN(numGridKinds), 4, 8)
		for i, x := range g.x {
			for j, y := range g.y {
				z := g.z[i*8+j]
				if !finite(x) || !finite(y) || !finite(z) {
					continue
				}
				want := exactFMA(x, y, z)
				if got := fma32(x, y, z); math.Float32bits(got) != math.Float32bits(want) {
					t.Fatalf("fma32(%08x, %08x, %08x) = %08x, want %08x", math.Float32bits(x), math.Float32bits(y),
						math.Float32bits(z), math.Float32bits(got), math.Float32bits(want))
				}
				if got := fma32Odd(x, y, z); math.Float32bits(got) != math.Float32bits(want) {
					t.Fatalf("fma32Odd(%08x, %08x, %08x) = %08x, want %08x", math.Float32bits(x), math.Float32bits(y),
						math.Float32bits(z), math.Float32bits(got), math.Float32bits(want))
				}
				checked++
			}
		}
	}
}

// TestFMA32Special checks the IEEE rules for infinities and NaNs.
func TestFMA32Special(t *testing.T) {
	inf, nan := float32(math.Inf(1)), float32(math.NaN())
	for _, tc := range []struct{ x, y, z, want float32 }{
		{inf, 2, 1, inf},
		{inf, -2, 1, -inf},
		{2, 3, -inf, -inf},
		{math.MaxFloat32, 2, 0, inf},
		{math.MaxFloat32, 2, -inf, -inf},
		{0x1p100, 0x1p100, -math.MaxFloat32, inf},
	} {
		if got := fma32(tc.x, tc.y, tc.z); got != tc.want {
			t.Errorf("fma32(%g, %g, %g) = %g, want %g", tc.x, tc.y, tc.z, got, tc.want)
		}
	}
	for _, tc := range [][3]float32{{inf, 0, 1}, {0, -inf, 1}, {inf, 1, -inf}} {
		if got := math.Float32bits(fma32(tc[0], tc[1], tc[2])); got != defaultNaN {
			t.Errorf("fma32(%g, %g, %g) = %08x, want the default NaN", tc[0], tc[1], tc[2], got)
		}
	}
	for _, tc := range [][3]float32{{nan, 1, 1}, {1, nan, 1}, {1, 1, nan}, {nan, inf, 0}} {
		if got := fma32(tc[0], tc[1], tc[2]); got == got {
			t.Errorf("fma32(%g, %g, %g) = %g, want NaN", tc[0], tc[1], tc[2], got)
		}
	}
}

func finite(x float32) bool { return !math.IsInf(float64(x), 0) && !math.IsNaN(float64(x)) }

// exactFMA rounds the exact x·y+z once, ties to even (signed zeros as IEEE 754:
// an exact zero sum is +0 unless both terms are -0).
func exactFMA(x, y, z float32) float32 {
	p := new(big.Float).SetPrec(2048).Mul(big.NewFloat(float64(x)), big.NewFloat(float64(y)))
	s := new(big.Float).SetPrec(2048).Add(p, big.NewFloat(float64(z)))
	f, _ := s.Float32()
	return f
}
