"""The platform HSM and customer tokens over PKCS#11: session, AES keys, signing, import."""
