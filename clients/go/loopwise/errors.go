package loopwise

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrDecisionUnavailable is matched (errors.Is) by the error of Decide when the
// decision service cannot be reached and no default decision is known for the use case.
var ErrDecisionUnavailable = errors.New("loopwise: decision service unreachable and no default decision known")

// Error is a failed call: the gRPC status of its last attempt, and how many attempts
// were made. It carries the status (status.FromError and status.Code work on it).
type Error struct {
	// Method is the RPC, e.g. "Decide".
	Method string
	// Code and Message are the status of the last attempt.
	Code    codes.Code
	Message string
	// Attempts is how many times the call was made (1 + retries).
	Attempts int
	// Pushback is the wait the server asked for before a retry, when it asked
	// (HasPushback); negative when it asked for no retry.
	Pushback    time.Duration
	HasPushback bool
	// Violations are the field violations of a google.rpc.BadRequest detail (bad input).
	Violations []FieldViolation

	status *status.Status
}

// FieldViolation is one bad field of a request, as the server named it.
type FieldViolation struct {
	Field       string
	Description string
}

func newError(method string, st *status.Status, attempts int, pushback time.Duration, hasPushback bool) *Error {
	e := &Error{Method: method, Code: st.Code(), Message: st.Message(), Attempts: attempts,
		Pushback: pushback, HasPushback: hasPushback, status: st}
	for _, detail := range st.Details() {
		if bad, ok := detail.(*errdetails.BadRequest); ok {
			for _, v := range bad.GetFieldViolations() {
				e.Violations = append(e.Violations, FieldViolation{Field: v.GetField(), Description: v.GetDescription()})
			}
		}
	}
	return e
}

func (e *Error) Error() string {
	text := fmt.Sprintf("loopwise: %s: %s: %s", e.Method, e.Code, e.Message)
	if e.Attempts > 1 {
		text += fmt.Sprintf(" (after %d attempts)", e.Attempts)
	}
	return text
}

// GRPCStatus is the status of the last attempt (for status.FromError and status.Code).
func (e *Error) GRPCStatus() *status.Status { return e.status }

// Retryable tells whether the call failed on a transient condition (UNAVAILABLE, or
// RESOURCE_EXHAUSTED with retry pushback that did not ask for no retry): the same call
// may succeed later.
func (e *Error) Retryable() bool {
	if e.Code == codes.Unavailable {
		return true
	}
	return e.Code == codes.ResourceExhausted && e.HasPushback && e.Pushback >= 0
}

// unreachable: the decision service cannot answer now (unreachable, past the deadline,
// or shedding load), so Decide answers with the default decision.
func (e *Error) unreachable() bool {
	switch e.Code {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	case codes.ResourceExhausted:
		return e.HasPushback
	}
	return false
}

// DecisionUnavailableError is returned by Decide when the decision service cannot be
// reached and no default decision is known for the use case (none learned, none given
// in Config.Defaults). It matches ErrDecisionUnavailable and unwraps to the *Error of
// the failed call.
type DecisionUnavailableError struct {
	UseCase string
	Err     *Error
}

func (e *DecisionUnavailableError) Error() string {
	return fmt.Sprintf("loopwise: decision service unreachable (%s) and no default decision known for use case %q",
		e.Err.Code, e.UseCase)
}

// Unwrap gives the failed call's error.
func (e *DecisionUnavailableError) Unwrap() error { return e.Err }

// Is matches ErrDecisionUnavailable.
func (e *DecisionUnavailableError) Is(target error) bool { return target == ErrDecisionUnavailable }

// ConfigError is a Config that cannot be used (New) or a LOOPWISE_* variable that
// cannot be read (ConfigFromEnv).
type ConfigError struct {
	Field  string
	Reason string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("loopwise: config %s: %s", e.Field, e.Reason)
}

// FeatureError is a feature value Decide cannot send (not a number, a string, a bool
// or nil).
type FeatureError struct {
	Name  string
	Value any
}

func (e *FeatureError) Error() string {
	return fmt.Sprintf("loopwise: feature %q: value %v of type %T: expected a number, a string, a bool or nil",
		e.Name, e.Value, e.Value)
}
