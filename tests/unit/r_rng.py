"""R's default random numbers (Mersenne-Twister + Inversion, R >= 3.6) from set.seed(seed),
so that NHSRplotthedots' test data (``set.seed(123); rnorm(20)``) is reproduced exactly rather
than copied to 8 printed digits. Written from R's src/main/RNG.c and snorm.c."""

from __future__ import annotations

from statistics import NormalDist


class RRandom:
    """R's default RNG (Mersenne-Twister, Inversion) from set.seed(seed)."""
    N, M = 624, 397

    def __init__(self, seed: int) -> None:
        s = seed & 0xFFFFFFFF
        for _ in range(50):
            s = (69069 * s + 1) & 0xFFFFFFFF
        table = []
        for _ in range(625):
            s = (69069 * s + 1) & 0xFFFFFFFF
            table.append(s)
        self.mt = table[1:]
        self.mti = 624

    def _genrand(self) -> float:
        mt, N, M = self.mt, self.N, self.M
        mag01 = (0, 0x9908B0DF)
        if self.mti >= N:
            for kk in range(N - M):
                y = (mt[kk] & 0x80000000) | (mt[kk + 1] & 0x7FFFFFFF)
                mt[kk] = mt[kk + M] ^ (y >> 1) ^ mag01[y & 1]
            for kk in range(N - M, N - 1):
                y = (mt[kk] & 0x80000000) | (mt[kk + 1] & 0x7FFFFFFF)
                mt[kk] = mt[kk + (M - N)] ^ (y >> 1) ^ mag01[y & 1]
            y = (mt[N - 1] & 0x80000000) | (mt[0] & 0x7FFFFFFF)
            mt[N - 1] = mt[M - 1] ^ (y >> 1) ^ mag01[y & 1]
            self.mti = 0
        y = mt[self.mti]
        self.mti += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C5680
        y ^= (y << 15) & 0xEFC60000
        y ^= y >> 18
        v = y * 2.3283064365386963e-10
        if v <= 0.0:
            return 0.5 * 2.328306437080797e-10
        if 1.0 - v <= 0.0:
            return 1.0 - 0.5 * 2.328306437080797e-10
        return v

    def rnorm(self, n: int, mean: float = 0.0, sd: float = 1.0) -> list[float]:
        big = 134217728
        out = []
        for _ in range(n):
            u = self._genrand()
            u = int(big * u) + self._genrand()
            out.append(mean + sd * NormalDist().inv_cdf(u / big))
        return out

