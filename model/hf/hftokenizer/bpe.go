package hftokenizer

import (
	"container/heap"
	"fmt"
	"strings"
	"sync"
)

// bpe is a byte-pair-encoding model as Hugging Face's tokenizers apply it:
// a word starts as one symbol per character (byte-fallback tokens for
// characters outside the vocabulary, or the unknown token), then the
// adjacent pair with the lowest merge rank is merged, leftmost first, until
// no pair has a merge.
type bpe struct {
	vocab        map[string]int32
	merges       map[[2]int32]merge
	unk          int32 // -1: none
	fuseUnk      bool
	byteFallback bool
	ignoreMerges bool
	prefix       string // continuing_subword_prefix
	suffix       string // end_of_word_suffix
	byteTokens   [256]int32

	mu    sync.Mutex
	cache map[string][]int32
}

type merge struct {
	rank   int
	result int32
}

const cacheMax = 50000

func newBPE(m *bpeModel, field string) (*bpe, error) {
	if m.Dropout != nil && *m.Dropout > 0 {
		return nil, fmt.Errorf("%s.dropout: %v makes tokenisation random; only 0 or null is supported", field, *m.Dropout)
	}
	if len(m.Vocab) == 0 {
		return nil, fmt.Errorf("%s.vocab: empty", field)
	}
	b := &bpe{vocab: make(map[string]int32, len(m.Vocab)), merges: make(map[[2]int32]merge, len(m.Merges)), unk: -1,
		fuseUnk: m.FuseUnk, byteFallback: m.ByteFallback, ignoreMerges: m.IgnoreMerges, cache: map[string][]int32{}}
	for tok, id := range m.Vocab {
		b.vocab[tok] = int32(id)
	}
	if m.ContinuingSubwordPrefix != nil {
		b.prefix = *m.ContinuingSubwordPrefix
	}
	if m.EndOfWordSuffix != nil {
		b.suffix = *m.EndOfWordSuffix
	}
	if m.UnkToken != nil {
		id, ok := b.vocab[*m.UnkToken]
		if !ok {
			return nil, fmt.Errorf("%s.unk_token: %q is not in the vocabulary", field, *m.UnkToken)
		}
		b.unk = id
	}
	for i := range b.byteTokens {
		b.byteTokens[i] = -1
		if id, ok := b.vocab[fmt.Sprintf("<0x%02X>", i)]; ok {
			b.byteTokens[i] = id
		}
	}
	for i, raw := range m.Merges {
		x, y, err := mergePair(raw)
		if err != nil {
			return nil, fmt.Errorf("%s.merges[%d]: %w", field, i, err)
		}
		a, okA := b.vocab[x]
		c, okC := b.vocab[y]
		r, okR := b.vocab[x+strings.TrimPrefix(y, b.prefix)] // the right part's subword prefix goes
		if !okA || !okC || !okR {
			return nil, fmt.Errorf("%s.merges[%d]: %q + %q: a token of the merge is not in the vocabulary", field, i, x, y)
		}
		// A pair merged twice keeps its last rank: tokenizers collects the
		// merges into a map, later ones overwriting earlier ones
		// (tokenizers/src/models/bpe/model.rs: BpeBuilder::build).
		b.merges[[2]int32{a, c}] = merge{rank: i, result: r}
	}
	return b, nil
}

// tokenize returns the ids of one pre-tokenised word.
func (b *bpe) tokenize(word string) []int32 {
	if word == "" {
		return nil
	}
	if b.ignoreMerges {
		if id, ok := b.vocab[word]; ok {
			return []int32{id}
		}
	}
	b.mu.Lock()
	ids, ok := b.cache[word]
	b.mu.Unlock()
	if ok {
		return ids
	}
	ids = b.merge(b.symbols(word))
	b.mu.Lock()
	if len(b.cache) >= cacheMax {
		b.cache = map[string][]int32{}
	}
	b.cache[word] = ids
	b.mu.Unlock()
	return ids
}

// symbols is the word's first segmentation: a symbol per character.
func (b *bpe) symbols(word string) []int32 {
	var out []int32
	runes := []rune(word)
	lastUnk := false
	for i, r := range runes {
		s := string(r)
		if i > 0 {
			s = b.prefix + s
		}
		if i == len(runes)-1 {
			s += b.suffix
		}
		if id, ok := b.vocab[s]; ok {
			out = append(out, id)
			lastUnk = false
			continue
		}
		if b.byteFallback {
			bytes := []byte(string(r))
			all := true
			for _, c := range bytes {
				all = all && b.byteTokens[c] >= 0
			}
			if all {
				for _, c := range bytes {
					out = append(out, b.byteTokens[c])
				}
				lastUnk = false
				continue
			}
		}
		if b.unk < 0 {
			continue // no unknown token: the character is dropped, as Hugging Face does
		}
		if b.fuseUnk && lastUnk {
			continue
		}
		out = append(out, b.unk)
		lastUnk = true
	}
	return out
}

// merge applies the merges to a segmentation: a heap of candidate pairs by
// (rank, position), each checked when popped against the current symbols.
func (b *bpe) merge(ids []int32) []int32 {
	n := len(ids)
	if n < 2 {
		return ids
	}
	prev := make([]int, n)
	next := make([]int, n)
	for i := range ids {
		prev[i], next[i] = i-1, i+1
	}
	alive := make([]bool, n)
	for i := range alive {
		alive[i] = true
	}
	h := &pairHeap{}
	push := func(i int) {
		j := next[i]
		if i < 0 || j >= n {
			return
		}
		if m, ok := b.merges[[2]int32{ids[i], ids[j]}]; ok {
			heap.Push(h, candidate{rank: m.rank, pos: i, left: ids[i], right: ids[j]})
		}
	}
	for i := 0; i < n-1; i++ {
		push(i)
	}
	for h.Len() > 0 {
		c := heap.Pop(h).(candidate)
		i := c.pos
		j := next[i]
		if !alive[i] || j >= n || ids[i] != c.left || ids[j] != c.right {
			continue // stale: one of the symbols merged since
		}
		ids[i] = b.merges[[2]int32{c.left, c.right}].result
		alive[j] = false
		next[i] = next[j]
		if next[j] < n {
			prev[next[j]] = i
		}
		if prev[i] >= 0 {
			push(prev[i])
		}
		push(i)
	}
	out := make([]int32, 0, n)
	for i := 0; i < n; i = next[i] {
		out = append(out, ids[i])
	}
	return out
}

type candidate struct {
	rank, pos   int
	left, right int32
}

type pairHeap []candidate

func (h pairHeap) Len() int { return len(h) }
func (h pairHeap) Less(i, j int) bool {
	if h[i].rank != h[j].rank {
		return h[i].rank < h[j].rank
	}
	return h[i].pos < h[j].pos
}
func (h pairHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *pairHeap) Push(x any)   { *h = append(*h, x.(candidate)) }
func (h *pairHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
