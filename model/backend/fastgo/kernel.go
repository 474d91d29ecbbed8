package fastgo

import "github.com/alignflow/alignflow/model/matmul"

// matMul is the matrix kernel fastgo runs float32 DotGenerals on
// (model/matmul's MulBatch): batch products c = a·b of row-major float32
// matrices with strides, the q-th from a[q*strideA:], b[q*strideB:] into
// c[q*strideC:]; a[i*lda + p] for i < m, p < k (transA: a[p*lda + i]);
// b[p*ldb + j] (transB: b[j*ldb + p]); c[i*ldc + j] for j < n,
// overwritten, not accumulated. One call shares the workers among the
// batch's products, so attention's many small products (each below the
// size one product would split) still use every core. It is
// deterministic: each element is one fused multiply-add chain over
// p = 0..k-1, the same bits on every path, thread count and batch
// composition. A variable, so that tests can swap it.
var matMul = matmul.MulBatch
