"""Honest programs for the built-in ``python_basics`` task and the LeetCode-Hard sample in
``tests/data/leetcode_hard_sample.jsonl``: right ones, and wrong ones the way models get them
wrong, each with the pass/fail vector plain Python gives it on the problem's tests.

``bench/sandbox.py`` and ``tests/test_sandbox.py`` run them through the sandbox; the vectors
were also the old (pre-bubblewrap) runner's, so the isolation changed no honest verdict.
"""

from __future__ import annotations

PROGRAMS: dict[str, list[tuple[str, tuple[bool, ...]]]] = {
    "second_largest": [
        (
            "def second_largest(nums: List[int]) -> int:\n    return sorted(set(nums))[-2]\n",
            (True, True, True),
        ),
        (  # forgets the values must be distinct
            "def second_largest(nums):\n    return sorted(nums)[-2]\n",
            (False, True, False),
        ),
    ],
    "run_length": [
        (
            "import itertools\n\ndef run_length(s: str) -> str:\n"
            "    print('encoding', s)\n"
            "    return ''.join(f'{k}{len(list(g))}' for k, g in itertools.groupby(s))\n",
            (True, True, True),
        ),
        (  # counts at most nine
            "def run_length(s):\n    out, i = [], 0\n    while i < len(s):\n"
            "        j = i\n        while j < len(s) and s[j] == s[i] and j - i < 9:\n"
            "            j += 1\n        out.append(s[i] + str(j - i))\n        i = j\n"
            "    return ''.join(out)\n",
            (True, True, False),
        ),
    ],
    "is_balanced": [
        (
            "def is_balanced(s: str) -> bool:\n    pairs = {')': '(', ']': '[', '}': '{'}\n"
            "    stack = []\n    for c in s:\n        if c in '([{':\n            stack.append(c)\n"
            "        elif c in pairs:\n            if not stack or stack.pop() != pairs[c]:\n"
            "                return False\n    return not stack\n",
            (True, True, True, True),
        ),
        (  # only checks the length
            "def is_balanced(s):\n    return len(s) % 2 == 0\n",
            (True, False, False, True),
        ),
    ],
    "merge_intervals": [
        (
            "def merge_intervals(intervals):\n    out = []\n"
            "    for a, b in sorted(intervals):\n        if out and a <= out[-1][1]:\n"
            "            out[-1][1] = max(out[-1][1], b)\n"
            "        else:\n            out.append([a, b])\n"
            "    return out\n",
            (True, True, True),
        ),
        (  # tuples, not lists: unequal in Python
            "def merge_intervals(intervals):\n    out = []\n"
            "    for a, b in sorted(intervals):\n        if out and a <= out[-1][1]:\n"
            "            out[-1] = (out[-1][0], max(out[-1][1], b))\n"
            "        else:\n            out.append((a, b))\n    return out\n",
            (False, False, True),
        ),
    ],
    "count_primes": [
        (
            "def count_primes(n):\n    if n < 3:\n        return 0\n"
            "    sieve = bytearray([1]) * n\n    sieve[0] = sieve[1] = 0\n"
            "    for i in range(2, int(n ** 0.5) + 1):\n        if sieve[i]:\n"
            "            sieve[i * i :: i] = bytearray(len(range(i * i, n, i)))\n"
            "    return sum(sieve)\n",
            (True, True, True, True),
        ),
        (  # counts n itself
            "def count_primes(n):\n"
            "    return sum(all(k % d for d in range(2, int(k ** 0.5) + 1))\n"
            "               for k in range(2, n + 1))\n",
            (True, True, False, True),
        ),
    ],
    "trapping-rain-water": [
        (
            "from typing import List\n\ndef trap(height: List[int]) -> int:\n"
            "    left, right, water = 0, len(height) - 1, 0\n    lmax = rmax = 0\n"
            "    while left < right:\n        if height[left] < height[right]:\n"
            "            lmax = max(lmax, height[left]); water += lmax - height[left]; left += 1\n"
            "        else:\n"
            "            rmax = max(rmax, height[right])\n"
            "            water += rmax - height[right]; right -= 1\n"
            "    return water\n",
            (True, True, True, True),
        ),
        (  # crashes on an empty map
            "def trap(height):\n    top = max(height)\n    i = height.index(top)\n    water = 0\n"
            "    m = 0\n    for h in height[:i]:\n        m = max(m, h); water += m - h\n"
            "    m = 0\n"
            "    for h in reversed(height[i:]):\n        m = max(m, h); water += m - h\n"
            "    return water\n",
            (True, True, False, True),
        ),
    ],
    "median-of-two-sorted-arrays": [
        (
            "import heapq\n\ndef find_median_sorted_arrays(nums1, nums2):\n"
            "    merged = list(heapq.merge(nums1, nums2))\n    n = len(merged)\n"
            "    mid = n // 2\n"
            "    return float(merged[mid]) if n % 2 else (merged[mid - 1] + merged[mid]) / 2\n",
            (True, True, True),
        ),
        (  # integer division
            "def find_median_sorted_arrays(a, b):\n    m = sorted(a + b)\n    n = len(m)\n"
            "    return m[n // 2] if n % 2 else (m[n // 2 - 1] + m[n // 2]) // 2\n",
            (True, False, True),
        ),
    ],
    "n-queens-ii": [
        (
            "from functools import lru_cache\n\ndef total_n_queens(n: int) -> int:\n"
            "    def place(row, cols, d1, d2):\n        if row == n:\n            return 1\n"
            "        return sum(place(row + 1, cols | 1 << c, d1 | 1 << (row + c), "
            "d2 | 1 << (row - c + n))\n"
            "                   for c in range(n)\n"
            "                   if not (cols >> c & 1 or d1 >> (row + c) & 1 "
            "or d2 >> (row - c + n) & 1))\n"
            "    return place(0, 0, 0, 0)\n",
            (True, True, True),
        ),
        (  # forgets one diagonal
            "def total_n_queens(n):\n    def place(row, cols, d1):\n        if row == n:\n"
            "            return 1\n        return sum(place(row + 1, cols | {c}, d1 | {row + c})\n"
            "                   for c in range(n) if c not in cols and row + c not in d1)\n"
            "    return place(0, frozenset(), frozenset())\n",
            (True, False, False),
        ),
    ],
    "longest-valid-parentheses": [
        (
            "def longest_valid_parentheses(s: str) -> int:\n    stack, best = [-1], 0\n"
            "    for i, c in enumerate(s):\n        if c == '(':\n            stack.append(i)\n"
            "        else:\n            stack.pop()\n            if not stack:\n"
            "                stack.append(i)\n            else:\n"
            "                best = max(best, i - stack[-1])\n    return best\n",
            (True, True, True),
        ),
        (  # counts matched pairs anywhere
            "def longest_valid_parentheses(s):\n    open_, pairs = 0, 0\n    for c in s:\n"
            "        if c == '(':\n            open_ += 1\n        elif open_:\n"
            "            open_ -= 1; pairs += 1\n    return 2 * pairs\n",
            (True, True, True),
        ),
        (  # a syntax error
            "def longest_valid_parentheses(s)\n    return 0\n",
            (False, False, False),
        ),
    ],
}
