package matmul

import "math"

// defaultNaN is the NaN an x86 FMA returns when no input is a NaN (inf·0, inf-inf):
// the fallback returns it on every architecture so that it agrees with the AVX paths.
const defaultNaN = 0xffc00000

// fma32 returns x·y+z rounded once to float32, as a hardware float32 FMA does.
//
// The product of two float32s is exact in float64 (24+24 bits <= 53), so
// s = x·y+z in float64 is the exact sum rounded once, and float32(s) rounds it a
// second time. That is the single rounding unless s lies exactly halfway between
// two float32s: otherwise the exact sum lies on the same side of every halfway
// point as s (a halfway point between them would be a float64 nearer the exact
// sum than s). Halfway points, the overflow threshold among them, have at most 25
// significant bits, so the low 28 bits of s's significand are zero; when they are
// not, float32(s) is the answer, and fma32Odd handles the rest: s on a coarse
// grid by chance (one in 2^28), exact sums, infinities and NaNs.
func fma32(x, y, z float32) float32 {
	s := float64(x)*float64(y) + float64(z)
	if math.Float64bits(s)&(1<<28-1) == 0 {
		return fma32Odd(x, y, z)
	}
	return float32(s)
}

// fma32Odd is fma32 by rounding to odd: the sum s = p+z is rounded to nearest,
// its error e is recovered exactly (TwoSum), and an inexact s is rounded to odd,
// its last bit forced to 1 by stepping towards the exact value. Rounding to odd
// at 53 bits and then to nearest at 24 bits equals one rounding to nearest at 24
// bits, since 53 >= 24+2 (Boldo and Melquiond, "Emulation of FMA and correctly
// rounded sums: proved algorithms using rounding to odd", IEEE Trans. Computers
// 57(4), 2008). No step can overflow or underflow in float64: finite float32
// products and sums stay within 2^-298 and 2^257.
func fma32Odd(x, y, z float32) float32 {
	p := float64(x) * float64(y)
	w := float64(z)
	s := p + w
	if math.IsNaN(s) || math.IsInf(s, 0) {
		return special(x, y, z, s)
	}
	v := s - p
	e := (p - (s - v)) + (w - v)
	if bits := math.Float64bits(s); e != 0 && bits&1 == 0 {
		// s is never 0 here: a nonzero exact sum of multiples of 2^-298 is
		// representable near 0, so s = 0 implies e = 0.
		if (e > 0) == (s > 0) {
			bits++ // the exact value lies farther from zero
		} else {
			bits-- // nearer to zero (from a power of two, into the binade below)
		}
		s = math.Float64frombits(bits)
	}
	return float32(s)
}

// special returns fma32 of inputs with an infinite or NaN result, which the
// float64 arithmetic gets right but for the NaN's bits: a NaN input comes back
// quieted, the first of x, y, z that is one, as VFMADD231PS picks them on AMD
// Zen 4 (other CPUs may pick another: NaN payloads are the one thing that is not
// the same everywhere); a NaN made from non-NaN inputs is defaultNaN.
func special(x, y, z float32, s float64) float32 {
	if !math.IsNaN(s) {
		return float32(s)
	}
	for _, v := range [3]float32{x, y, z} {
		if v != v {
			return math.Float32frombits(math.Float32bits(v) | 0x00400000)
		}
	}
	return math.Float32frombits(defaultNaN)
}
