#!/usr/bin/env bash
# Make a CA and a serving certificate for regcred.<namespace>.svc and the CI API's
# regcred-ci.<namespace>.svc (plus localhost), for tls.mode=provided and for local runs. Writes into this folder; keys are git-ignored.
#   bash certs/generate.sh [namespace]        (default namespace: regcred-system)
set -euo pipefail
namespace=${1:-regcred-system}
dir=$(cd "$(dirname "$0")" && pwd)
cd "$dir"
service="regcred.${namespace}.svc"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
  -subj "/CN=regcred CA" -keyout ca.key -out ca.crt \
  -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=${service}" \
  -keyout tls.key -out tls.csr 2>/dev/null
cat > tls.ext <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:${service},DNS:${service}.cluster.local,DNS:regcred.${namespace},DNS:regcred-ci.${namespace}.svc,DNS:regcred-ci.${namespace}.svc.cluster.local,DNS:regcred-ci.${namespace},DNS:localhost,IP:127.0.0.1
EXT
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 -extfile tls.ext -out tls.crt 2>/dev/null
rm -f tls.csr tls.ext ca.srl
chmod 600 ca.key tls.key
echo "wrote ${dir}/ca.crt, tls.crt, tls.key (for ${service}); caBundle: base64 -w0 ${dir}/ca.crt"
