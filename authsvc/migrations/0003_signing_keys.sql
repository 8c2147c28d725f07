-- Apps that sign with EdDSA or ES256 keep their private key (PKCS#8 PEM); key_id is its kid.
ALTER TABLE apps ADD COLUMN private_key text;
