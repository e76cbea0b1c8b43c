package loopwise

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// newUUID7 is a UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, the version, 74
// random bits and the variant, as the services make decision ids.
func newUUID7(now time.Time) string {
	var b [16]byte
	_, _ = rand.Read(b[6:])
	ms := uint64(now.UnixMilli())
	for i := 0; i < 6; i++ {
		b[i] = byte(ms >> (40 - 8*i))
	}
	b[6] = 0x70 | b[6]&0x0f
	b[8] = 0x80 | b[8]&0x3f
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:])
	return string(out[:])
}

// uuid7Time is the timestamp of a UUIDv7 string, or false when it is not one.
func uuid7Time(id string) (time.Time, bool) {
	if len(id) != 36 || id[8] != '-' || id[13] != '-' || id[18] != '-' || id[23] != '-' || id[14] != '7' {
		return time.Time{}, false
	}
	var raw [6]byte
	if _, err := hex.Decode(raw[0:4], []byte(id[0:8])); err != nil {
		return time.Time{}, false
	}
	if _, err := hex.Decode(raw[4:6], []byte(id[9:13])); err != nil {
		return time.Time{}, false
	}
	var ms int64
	for _, c := range raw {
		ms = ms<<8 | int64(c)
	}
	return time.UnixMilli(ms), true
}
