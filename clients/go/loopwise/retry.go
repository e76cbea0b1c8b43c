package loopwise

import (
	"math/rand/v2"
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// PushbackKey is the trailer in which a server shedding load says how long to wait
// before retrying, in milliseconds (gRPC's retry design); a negative or unreadable
// value asks for no retry.
const PushbackKey = "grpc-retry-pushback-ms"

// backoffBase is the wait before the first retry without pushback: attempt n waits a
// random time in [base*2^n/2, base*2^n]; with pushback p, in [p, 1.5p].
const backoffBase = 50 * time.Millisecond

// pushbackOf reads the retry pushback of a failed call: the grpc-retry-pushback-ms
// trailer, else the status's google.rpc.RetryInfo. ok is false when there is neither;
// the wait is negative when the server asked for no retry.
func pushbackOf(trailer metadata.MD, st *status.Status) (wait time.Duration, ok bool) {
	if values := trailer.Get(PushbackKey); len(values) > 0 {
		ms, err := strconv.ParseInt(values[0], 10, 64)
		if err != nil || ms < 0 {
			return -1, true
		}
		return time.Duration(ms) * time.Millisecond, true
	}
	for _, detail := range st.Details() {
		if info, isInfo := detail.(*errdetails.RetryInfo); isInfo {
			delay := info.GetRetryDelay().AsDuration()
			if delay < 0 {
				delay = 0
			}
			return delay, true
		}
	}
	return 0, false
}

// retryDelay is the wait before retrying a failed attempt, or false: no retry.
//
// Retried: UNAVAILABLE, and RESOURCE_EXHAUSTED that carries retry pushback (without
// pushback it is a size or quota limit, final), at most retries times (attempt counts
// from 0). The wait is at least the server's pushback (up to 1.5 times it, at random,
// so that refused callers do not come back together), or exponential backoff with
// jitter without one. No retry when the server asked for none, or when the wait would
// leave no time (left) for another attempt. random gives numbers in [0, 1).
func retryDelay(code codes.Code, pushback time.Duration, hasPushback bool, attempt, retries int,
	left time.Duration, random func() float64) (time.Duration, bool) {
	if attempt >= retries {
		return 0, false
	}
	if code != codes.Unavailable && code != codes.ResourceExhausted {
		return 0, false
	}
	if hasPushback && pushback < 0 {
		return 0, false
	}
	var delay time.Duration
	if !hasPushback {
		if code == codes.ResourceExhausted {
			return 0, false
		}
		ceiling := float64(backoffBase) * float64(uint64(1)<<min(attempt, 30))
		delay = time.Duration(ceiling/2 + random()*ceiling/2)
	} else {
		delay = time.Duration(float64(pushback) * (1 + 0.5*random()))
	}
	if delay >= left {
		return 0, false
	}
	return delay, true
}

// jitter is the default source of randomness of the waits.
func jitter() float64 { return rand.Float64() }
