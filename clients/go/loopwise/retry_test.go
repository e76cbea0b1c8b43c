package loopwise

import (
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestRetryDelay(t *testing.T) {
	low, high := func() float64 { return 0 }, func() float64 { return 0.999999 }
	ms := time.Millisecond
	cases := []struct {
		name        string
		code        codes.Code
		pushback    time.Duration
		hasPushback bool
		attempt     int
		left        time.Duration
		min, max    time.Duration
		retry       bool
	}{
		{"first backoff", codes.Unavailable, 0, false, 0, time.Second, 25 * ms, 50 * ms, true},
		{"second backoff", codes.Unavailable, 0, false, 1, time.Second, 50 * ms, 100 * ms, true},
		{"third backoff", codes.Unavailable, 0, false, 2, time.Second, 100 * ms, 200 * ms, true},
		{"retries used up", codes.Unavailable, 0, false, 3, time.Second, 0, 0, false},
		{"no time left", codes.Unavailable, 0, false, 0, 20 * ms, 0, 0, false},
		{"pushback", codes.ResourceExhausted, 200 * ms, true, 0, time.Second, 200 * ms, 300 * ms, true},
		{"pushback on unavailable", codes.Unavailable, 400 * ms, true, 0, time.Second, 400 * ms, 600 * ms, true},
		{"pushback past the deadline", codes.ResourceExhausted, 2 * time.Second, true, 0, time.Second, 0, 0, false},
		{"server asks for no retry", codes.Unavailable, -1, true, 0, time.Second, 0, 0, false},
		{"exhausted without pushback", codes.ResourceExhausted, 0, false, 0, time.Second, 0, 0, false},
		{"invalid argument", codes.InvalidArgument, 100 * ms, true, 0, time.Second, 0, 0, false},
		{"deadline exceeded", codes.DeadlineExceeded, 0, false, 0, time.Second, 0, 0, false},
		{"not found", codes.NotFound, 0, false, 0, time.Second, 0, 0, false},
		{"internal", codes.Internal, 0, false, 0, time.Second, 0, 0, false},
	}
	for _, c := range cases {
		for _, random := range []func() float64{low, high} {
			delay, retry := retryDelay(c.code, c.pushback, c.hasPushback, c.attempt, 3, c.left, random)
			if retry != c.retry || (retry && (delay < c.min || delay > c.max)) {
				t.Errorf("%s: %v %v, want %v in [%v, %v]", c.name, delay, retry, c.retry, c.min, c.max)
			}
		}
	}
	// The jitter spreads the waits.
	seen := map[time.Duration]bool{}
	for range 50 {
		delay, _ := retryDelay(codes.Unavailable, 0, false, 0, 3, time.Second, jitter)
		seen[delay] = true
	}
	if len(seen) < 10 {
		t.Fatalf("%d distinct waits of 50", len(seen))
	}
}

func TestPushbackOf(t *testing.T) {
	plain := status.New(codes.ResourceExhausted, "limit")
	withInfo, _ := status.New(codes.ResourceExhausted, "limit").WithDetails(
		&errdetails.RetryInfo{RetryDelay: durationpb.New(1500 * time.Millisecond)})
	cases := []struct {
		name    string
		trailer metadata.MD
		status  *status.Status
		wait    time.Duration
		ok      bool
	}{
		{"none", nil, plain, 0, false},
		{"trailer", metadata.Pairs(PushbackKey, "250"), plain, 250 * time.Millisecond, true},
		{"trailer first", metadata.Pairs(PushbackKey, "10"), withInfo, 10 * time.Millisecond, true},
		{"negative trailer", metadata.Pairs(PushbackKey, "-3"), plain, -1, true},
		{"unreadable trailer", metadata.Pairs(PushbackKey, "later"), withInfo, -1, true},
		{"retry info", metadata.Pairs("other", "x"), withInfo, 1500 * time.Millisecond, true},
	}
	for _, c := range cases {
		wait, ok := pushbackOf(c.trailer, c.status)
		if wait != c.wait || ok != c.ok {
			t.Errorf("%s: %v %v, want %v %v", c.name, wait, ok, c.wait, c.ok)
		}
	}
}

func TestUUID7(t *testing.T) {
	now := time.Now()
	seen := map[string]bool{}
	for range 1000 {
		id := newUUID7(now)
		if !uuid7Pattern.MatchString(id) || seen[id] {
			t.Fatalf("id %s", id)
		}
		seen[id] = true
		if at, ok := uuid7Time(id); !ok || at.UnixMilli() != now.UnixMilli() {
			t.Fatalf("time of %s: %v", id, at)
		}
	}
	for _, bad := range []string{"", "not-a-uuid", "0190f6a4-1b2c-4d3e-8f40-123456789abc"} {
		if _, ok := uuid7Time(bad); ok {
			t.Errorf("%q read as a UUIDv7", bad)
		}
	}
	// A known value: 2024-07-01T00:00:00Z is 0x01906b975c00 ms.
	if at, ok := uuid7Time("01906b97-5c00-7000-8000-000000000000"); !ok || !at.Equal(time.Date(2024, 7, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("known id: %v", at)
	}
}
