/* Greedy BPE merging in O(n log n): of all adjacent symbol pairs that merge,
 * the one whose merged piece scores highest merges first, the leftmost among
 * equal scores — the rule SentencePiece's BPE and llama2.c apply by
 * rescanning every pair after each merge (quadratic in the text's length).
 * Here the candidate pairs sit in a heap and a pair made stale by a
 * neighbouring merge is recognised (by symbol versions) and dropped when it
 * surfaces. The symbols are the caller's: it judges a pair and applies a
 * merge through two callbacks. */
#ifndef VKL_BPE_MERGE_H
#define VKL_BPE_MERGE_H

/* Can symbols left and right (adjacent) merge? Returns a value for apply
 * (e.g. the merged piece id, >= 0) and sets *score, or -1. */
typedef int (*vkl_bpe_pair_fn)(void *user, int left, int right, float *score);
/* Merges right into left (left keeps its index; right is gone). */
typedef void (*vkl_bpe_apply_fn)(void *user, int left, int right, int value);

/* Merges symbols 0..n-1 to completion and writes the indices of the
 * surviving symbols, in order, to order[] (room for n); returns their count,
 * or -1 when out of memory. */
int vkl_bpe_merge(int n, vkl_bpe_pair_fn pair, vkl_bpe_apply_fn apply, void *user, int *order);

#endif
