package fastgo

import (
	"fmt"
	"reflect"
	"runtime"
	"sync"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/pkg/errors"
)

//go:generate go run ./internal/genops gen_ops.go

// Builder records a graph as a sequence of steps: pure-Go segments, each a
// simplego graph being built, and Go calls between them. Every op but a
// float32 DotGeneral, or a large float32 Transpose, BroadcastInDim or
// ReduceSum goes to the current segment (opened on demand); such an op
// closes it and becomes a Go call, so the ops built after it go to a new
// segment.
type Builder struct {
	backend  *Backend
	name     string
	compiled bool

	params []*node
	names  []string // the parameters' names
	steps  []step
	cur    *segment // the open segment, nil after a kernel call
	count  int      // nodes created, for their ids
}

var _ backends.Builder = (*Builder)(nil)

func newBuilder(b *Backend, name string) *Builder {
	return &Builder{backend: b, name: name}
}

// step is one segment or one Go call; exactly one is set.
type step struct {
	seg  *segment
	call *goCall
}

// goCall is an op fastgo computes in Go between segments, reading its
// inputs' buffers in place and writing a new one: a float32 product on
// the kernel (dot), a float32 transpose or broadcast (cp), a float32 sum
// (sum) or an elementwise float32 function (unary); exactly one is set.
type goCall struct {
	in    []*node
	out   *node
	dot   *dotCall
	cp    *copyCall
	sum   *reduceCall
	unary *unaryCall
}

// addCall makes c, whose output has shape out, a step of its own after the
// current segment, which it closes, and returns its output's node.
func (b *Builder) addCall(c *goCall, out shapes.Shape) *node {
	c.out = b.newNode(out, c.in)
	c.out.call = c
	b.steps = append(b.steps, step{call: c})
	b.cur = nil
	return c.out
}

// split runs fn on parts parts lo..hi-1 cut into one range per worker: up to
// GOMAXPROCS of them, and no more than work/minWork, so a small call stays
// on the calling goroutine. A Go call's outputs are each computed by one
// worker, so the split changes no bit.
func split(parts, work, minWork int, fn func(lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), max(1, work/minWork), parts)
	if workers <= 1 {
		fn(0, parts)
		return
	}
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := parts*w/workers, parts*(w+1)/workers
		wg.Go(func() { fn(lo, hi) })
	}
	wg.Wait()
}

// run computes the call's output from its inputs' values.
func (c *goCall) run(in [][]float32, out []float32) {
	switch {
	case c.cp != nil:
		c.cp.run(in[0], out)
		return
	case c.sum != nil:
		c.sum.run(in[0], out)
		return
	case c.unary != nil:
		c.unary.run(in[0], out)
		return
	}
	d := c.dot
	matMul(d.batch, d.m, d.n, d.k, in[0], d.m*d.k, d.lda, d.transA, in[1], d.k*d.n, d.ldb, d.transB, out, d.m*d.n, d.n)
}

// segment is a simplego graph of the ops between two kernel calls.
type segment struct {
	index int // in Builder.steps
	b     backends.Builder
	nodes []*node // created in this segment, in order

	// byOp maps the segment's ops to their nodes: its own, and the
	// parameters and constants that stand for nodes of elsewhere, so an op
	// simplego returns unchanged (a no-op reshape) keeps its node.
	byOp    map[backends.Op]*node
	imports map[*node]backends.Op // nodes of earlier steps -> the parameter holding them
	order   []*node               // imported nodes, in parameter order
	consts  map[*node]backends.Op // constants -> their copy in this segment

	// ops counts the ops made in the segment, in the order simplego numbers
	// them; lastParam is the count when the last parameter was made.
	ops, lastParam int
}

// node is a fastgo Op: a value of the graph. Exactly one of seg, param >= 0,
// konst and call says where it comes from.
type node struct {
	b     *Builder
	id    int
	shape shapes.Shape
	// inputs are the nodes it is computed from: Compile follows them back
	// from the outputs to find what is needed.
	inputs []*node

	seg   *segment    // an op of this segment...
	op    backends.Op // ...this one
	seq   int         // ...made as its seq-th op
	param int         // an executable parameter, or -1
	konst any         // a constant's flat values
	call  *goCall     // a Go call's output

	// Set by Compile.
	live bool
	slot int
}

func (b *Builder) newNode(shape shapes.Shape, inputs []*node) *node {
	b.count++
	return &node{b: b, id: b.count, shape: shape, inputs: inputs, param: -1, slot: -1}
}

// Name implements backends.Builder.
func (b *Builder) Name() string { return b.name }

// OpShape implements backends.Builder.
func (b *Builder) OpShape(op backends.Op) (shapes.Shape, error) {
	n, err := b.node("OpShape", op)
	if err != nil {
		return shapes.Invalid(), err
	}
	return n.shape, nil
}

// node checks that op is a node of this builder, still building.
func (b *Builder) node(what string, op backends.Op) (*node, error) {
	if b.compiled {
		return nil, errors.Errorf("fastgo %s: builder %q is already compiled", what, b.name)
	}
	n, ok := op.(*node)
	if !ok || n == nil {
		return nil, errors.Errorf("fastgo %s: operand %T is not an op of the fastgo backend", what, op)
	}
	if n.b != b {
		return nil, errors.Errorf("fastgo %s: operand belongs to builder %q, not %q", what, n.b.name, b.name)
	}
	return n, nil
}

func (b *Builder) nodes(what string, ops []backends.Op) ([]*node, error) {
	out := make([]*node, len(ops))
	for i, op := range ops {
		n, err := b.node(what, op)
		if err != nil {
			return nil, errors.WithMessagef(err, "operand #%d", i)
		}
		out[i] = n
	}
	return out, nil
}

// Parameter implements backends.Builder.
func (b *Builder) Parameter(name string, shape shapes.Shape, sharding *backends.ShardingSpec) (backends.Op, error) {
	if b.compiled {
		return nil, errors.Errorf("fastgo Parameter: builder %q is already compiled", b.name)
	}
	if sharding != nil {
		return nil, errors.Errorf("fastgo Parameter %q: sharding is not supported", name)
	}
	if !b.backend.Capabilities().DTypes[shape.DType] {
		return nil, errors.Errorf("fastgo Parameter %q: dtype %s is not supported by the pure-Go backend", name, shape.DType)
	}
	n := b.newNode(shape, nil)
	n.param = len(b.params)
	b.params = append(b.params, n)
	b.names = append(b.names, name)
	return n, nil
}

// Constant implements backends.Builder. The values are copied: each segment
// that uses the constant embeds it, and a kernel call reads it from a buffer
// made once at Compile.
func (b *Builder) Constant(flat any, dims ...int) (backends.Op, error) {
	if b.compiled {
		return nil, errors.Errorf("fastgo Constant: builder %q is already compiled", b.name)
	}
	v := reflect.ValueOf(flat)
	if v.Kind() != reflect.Slice {
		return nil, errors.Errorf("fastgo Constant: flat must be a slice, got %T", flat)
	}
	dtype := dtypes.FromGoType(v.Type().Elem())
	if dtype == dtypes.InvalidDType || !b.backend.Capabilities().DTypes[dtype] {
		return nil, errors.Errorf("fastgo Constant: %T is not a slice of a supported dtype", flat)
	}
	shape := shapes.Make(dtype, dims...)
	if shape.Size() != v.Len() {
		return nil, errors.Errorf("fastgo Constant: %d values for shape %s", v.Len(), shape)
	}
	c := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
	reflect.Copy(c, v)
	n := b.newNode(shape, nil)
	n.konst = c.Interface()
	return n, nil
}

// segment returns the open segment, opening one if a Go call closed the
// last.
func (b *Builder) segment() *segment {
	if b.cur == nil {
		b.cur = &segment{
			index:   len(b.steps),
			b:       b.backend.Backend.Builder(fmt.Sprintf("%s/%d", b.name, len(b.steps))),
			byOp:    map[backends.Op]*node{},
			imports: map[*node]backends.Op{},
			consts:  map[*node]backends.Op{},
		}
		b.steps = append(b.steps, step{seg: b.cur})
	}
	return b.cur
}

// use returns the op that stands for n in segment s: n's own op, a copy of
// a constant, or a parameter fed at run time with n's value from an earlier
// step.
func (s *segment) use(n *node) (backends.Op, error) {
	switch {
	case n.seg == s:
		return n.op, nil
	case n.konst != nil:
		if op, ok := s.consts[n]; ok {
			return op, nil
		}
		op, err := s.b.Constant(n.konst, n.shape.Dimensions...)
		if err != nil {
			return nil, err
		}
		s.consts[n], s.byOp[op] = op, n
		return op, nil
	}
	if op, ok := s.imports[n]; ok {
		return op, nil
	}
	op, err := s.b.Parameter(fmt.Sprintf("fastgo#%d", n.id), n.shape, nil)
	if err != nil {
		return nil, err
	}
	s.imports[n], s.byOp[op] = op, n
	s.order = append(s.order, n)
	s.ops++
	s.lastParam = s.ops
	return op, nil
}

// forward builds an op in the current segment: call replays it on the
// segment's builder with the operands translated by use. It returns the
// nodes of the op's results.
func (b *Builder) forward(name string, operands []backends.Op, call func(sb backends.Builder, in []backends.Op) ([]backends.Op, error)) ([]*node, error) {
	ins, err := b.nodes(name, operands)
	if err != nil {
		return nil, err
	}
	s := b.segment()
	in := make([]backends.Op, len(ins))
	for i, n := range ins {
		if in[i], err = s.use(n); err != nil {
			return nil, errors.WithMessagef(err, "fastgo %s: operand #%d", name, i)
		}
	}
	results, err := call(s.b, in)
	if err != nil {
		return nil, err
	}
	out := make([]*node, len(results))
	for i, op := range results {
		if n, ok := s.byOp[op]; ok {
			out[i] = n
			continue
		}
		shape, err := s.b.OpShape(op)
		if err != nil {
			return nil, err
		}
		n := b.newNode(shape, ins)
		s.ops++
		n.seg, n.op, n.seq = s, op, s.ops
		s.byOp[op] = n
		s.nodes = append(s.nodes, n)
		out[i] = n
	}
	return out, nil
}

func (b *Builder) forward1(name string, operands []backends.Op, call func(sb backends.Builder, in []backends.Op) (backends.Op, error)) (backends.Op, error) {
	out, err := b.forward(name, operands, func(sb backends.Builder, in []backends.Op) ([]backends.Op, error) {
		r, err := call(sb, in)
		return []backends.Op{r}, err
	})
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

func (b *Builder) forward2(name string, operands []backends.Op, call func(sb backends.Builder, in []backends.Op) (backends.Op, backends.Op, error)) (backends.Op, backends.Op, error) {
	out, err := b.forward(name, operands, func(sb backends.Builder, in []backends.Op) ([]backends.Op, error) {
		r0, r1, err := call(sb, in)
		return []backends.Op{r0, r1}, err
	})
	if err != nil {
		return nil, nil, err
	}
	return out[0], out[1], nil
}

func (b *Builder) forward3(name string, operands []backends.Op, call func(sb backends.Builder, in []backends.Op) (backends.Op, backends.Op, backends.Op, error)) (backends.Op, backends.Op, backends.Op, error) {
	out, err := b.forward(name, operands, func(sb backends.Builder, in []backends.Op) ([]backends.Op, error) {
		r0, r1, r2, err := call(sb, in)
		return []backends.Op{r0, r1, r2}, err
	})
	if err != nil {
		return nil, nil, nil, err
	}
	return out[0], out[1], out[2], nil
}

// DistributedSPMD implements backends.Builder: fastgo runs on one device.
func (b *Builder) DistributedSPMD(numDevices int) error {
	if numDevices == 1 {
		return nil
	}
	return errors.Errorf("fastgo: distributed execution over %d devices is not supported", numDevices)
}

// DistributedAutoSharding implements backends.Builder: fastgo runs on one device.
func (b *Builder) DistributedAutoSharding(meshes ...backends.Mesh) error {
	return errors.New("fastgo: auto-sharding is not supported")
}

// DeviceAssignment implements backends.Builder: only device 0 exists.
func (b *Builder) DeviceAssignment(devices ...backends.DeviceNum) error {
	if len(devices) == 1 && devices[0] == 0 {
		return nil
	}
	return errors.Errorf("fastgo: device assignment %v is not supported (one device, 0)", devices)
}

// AllReduce implements backends.Builder: fastgo runs on one device.
func (b *Builder) AllReduce(operands []backends.Op, reductionType backends.ReduceOpType, replicaGroups [][]int) ([]backends.Op, error) {
	return nil, errors.New("fastgo: AllReduce is not supported (one device)")
}
