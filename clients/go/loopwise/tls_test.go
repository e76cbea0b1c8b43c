package loopwise

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

// pki is a CA with a server certificate (names "decision" and "localhost" only) and a
// client certificate, as files.
type pki struct {
	dir                           string
	caPool                        *x509.CertPool
	server                        tls.Certificate
	caFile, clientCert, clientKey string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTemplate := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage, dns []string) (certPEM, keyPEM []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		template := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: dns,
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature}
		der, err := x509.CreateCertificate(rand.Reader, template, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalECPrivateKey(key)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	}
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	serverCert, serverKey := leaf("decision", 2, x509.ExtKeyUsageServerAuth, []string{"decision", "localhost"})
	clientCert, clientKey := leaf("client", 3, x509.ExtKeyUsageClientAuth, nil)
	p := &pki{dir: dir, caPool: x509.NewCertPool(),
		caFile:     write("ca.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})),
		clientCert: write("client.crt", clientCert), clientKey: write("client.key", clientKey)}
	p.caPool.AddCert(ca)
	if p.server, err = tls.X509KeyPair(serverCert, serverKey); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMutualTLSWithTokenAndServerName(t *testing.T) {
	p := newPKI(t)
	f := startTLSFake(t, &tls.Config{Certificates: []tls.Certificate{p.server}, ClientCAs: p.caPool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12})
	// The certificate names "decision", not 127.0.0.1: ServerName says what to verify.
	client, err := New(Config{DecisionAddress: f.address, FeedbackAddress: f.address, CAFile: p.caFile,
		CertFile: p.clientCert, KeyFile: p.clientKey, ServerName: "decision", Token: "lw_team"})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	d, err := client.Decide(context.Background(), "offer", map[string]any{"x": 1}, "u")
	if err != nil || d.Fallback {
		t.Fatalf("over mutual TLS: %+v %v", d, err)
	}
	if _, err := client.LogOutcomes(context.Background(), []Outcome{{UseCase: "offer", DecisionID: d.DecisionID,
		OutcomeID: "o-1", Name: "purchase", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	if len(f.authorization) != 3 || f.authorization[2] != "Bearer lw_team" {
		t.Fatalf("authorization %v", f.authorization)
	}

	refused := func(cfg Config, why string) {
		t.Helper()
		cfg.DecisionAddress, cfg.FeedbackAddress = f.address, f.address
		client, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		_, err = client.GetUseCase(context.Background(), "offer")
		var failed *Error
		if !errors.As(err, &failed) || failed.Code != codes.Unavailable {
			t.Errorf("%s: %v", why, err)
		}
	}
	refused(Config{CAFile: p.caFile, ServerName: "decision"}, "no client certificate")
	refused(Config{CAFile: p.caFile, CertFile: p.clientCert, KeyFile: p.clientKey}, "the address is not in the certificate")
	refused(Config{CertFile: p.clientCert, KeyFile: p.clientKey, ServerName: "decision"}, "a server the system roots do not know")
	refused(Config{Insecure: true}, "plaintext")
}

func TestTLSToAnAddressTheCertificateNames(t *testing.T) {
	p := newPKI(t)
	f := startTLSFake(t, &tls.Config{Certificates: []tls.Certificate{p.server}, MinVersion: tls.VersionTLS12})
	_, port, _ := net.SplitHostPort(f.address)
	client, err := New(Config{DecisionAddress: net.JoinHostPort("localhost", port),
		FeedbackAddress: net.JoinHostPort("localhost", port), CAFile: p.caFile})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if useCase, err := client.GetUseCase(context.Background(), "offer"); err != nil || useCase.GetVersion() != 3 {
		t.Fatalf("%v %v", useCase, err)
	}
}
