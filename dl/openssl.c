/*
 * OpenSSL bound on first use (include/custos/lazylib.h, docs/ARCHITECTURE.md "Startup cost").
 *
 * libssl.so.3 and libcrypto.so.3 are no DT_NEEDED entries of custos on x86-64: mapping them,
 * applying libcrypto's ~21,000 relocations (it is linked with BIND_NOW) and running its
 * constructor (CPUID probing, which traps to the hypervisor in a VM) cost about 1 ms of every
 * process start, and `custos sandbox exec`, `config check` (unless a listener sets a cipher
 * string, which OpenSSL checks) and the sandbox's own children never call OpenSSL. Every OpenSSL function custos calls (the list below, found with `nm -u` over
 * custos, its tests and fuzz targets) is defined here as a four-instruction trampoline: it jumps
 * through its slot in custos_ossl_slots, and while the slot is empty it enters the resolver,
 * which loads libssl.so.3 (and with it libcrypto.so.3) by soname, fills every slot at once,
 * makes the slot page read-only and continues into the real function with the caller's
 * registers untouched. A trampoline is a jump, not a C wrapper, so it needs no prototype and
 * passes variadic calls through as they are.
 *
 * A process that cannot load OpenSSL at the first call stops with a message that names the
 * file (custos cannot run a TLS or hash call without it); `custos up` binds it before the proxy
 * confines itself (lazylib_openssl), so the library is never opened under the proxy's seccomp
 * filter and Landlock rules. A function missing from the list fails the link with "undefined
 * reference": add it here. Other architectures, and builds with -DCUSTOS_LAZY_OPENSSL=OFF,
 * link OpenSSL as usual and custos_ossl_bind does nothing.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "custos/lazylib.h"

/* 0 when OpenSSL is bound (binding it now), -1 with the reason in msg. core/lazylib.c's
 * lazylib_openssl calls it (weakly: programs that link OpenSSL themselves have no trampolines). */
int custos_ossl_bind(char *msg, size_t msgsz);

#if defined(CUSTOS_LAZY_OPENSSL)
#if !defined(__x86_64__)
#error "CUSTOS_LAZY_OPENSSL needs the x86-64 trampolines; build with -DCUSTOS_LAZY_OPENSSL=OFF"
#endif

/* Every OpenSSL function custos, its tests and its fuzz targets call. */
#define OSSL_FUNCS(X)                                                                              \
	X(ASN1_STRING_get0_data)                                                                   \
	X(ASN1_STRING_length)                                                                      \
	X(ASN1_TIME_diff)                                                                          \
	X(BIO_clear_flags)                                                                         \
	X(BIO_ctrl)                                                                                \
	X(BIO_free)                                                                                \
	X(BIO_int_ctrl)                                                                            \
	X(BIO_meth_free)                                                                           \
	X(BIO_meth_get_create)                                                                     \
	X(BIO_meth_get_ctrl)                                                                       \
	X(BIO_meth_get_destroy)                                                                    \
	X(BIO_meth_new)                                                                            \
	X(BIO_meth_set_create)                                                                     \
	X(BIO_meth_set_ctrl)                                                                       \
	X(BIO_meth_set_destroy)                                                                    \
	X(BIO_meth_set_puts)                                                                       \
	X(BIO_meth_set_read)                                                                       \
	X(BIO_meth_set_write)                                                                      \
	X(BIO_new)                                                                                 \
	X(BIO_new_mem_buf)                                                                         \
	X(BIO_number_read)                                                                         \
	X(BIO_number_written)                                                                      \
	X(BIO_s_mem)                                                                               \
	X(BIO_s_secmem)                                                                            \
	X(BIO_s_socket)                                                                            \
	X(BIO_set_flags)                                                                           \
	X(BIO_sock_should_retry)                                                                   \
	X(BN_bin2bn)                                                                               \
	X(BN_free)                                                                                 \
	X(BN_is_odd)                                                                               \
	X(BN_is_one)                                                                               \
	X(BN_new)                                                                                  \
	X(BN_num_bits)                                                                             \
	X(BN_rand)                                                                                 \
	X(BN_to_ASN1_INTEGER)                                                                      \
	X(CRYPTO_free)                                                                             \
	X(CRYPTO_get_ex_new_index)                                                                 \
	X(CRYPTO_malloc)                                                                           \
	X(CRYPTO_memcmp)                                                                           \
	X(ECDSA_SIG_free)                                                                          \
	X(ECDSA_SIG_new)                                                                           \
	X(ECDSA_SIG_set0)                                                                          \
	X(ERR_clear_error)                                                                         \
	X(ERR_error_string_n)                                                                      \
	X(ERR_get_error)                                                                           \
	X(ERR_new)                                                                                 \
	X(ERR_peek_error)                                                                          \
	X(ERR_peek_last_error)                                                                     \
	X(ERR_reason_error_string)                                                                 \
	X(ERR_set_debug)                                                                           \
	X(ERR_set_error)                                                                           \
	X(EVP_CIPHER_get_iv_length)                                                                \
	X(EVP_CipherInit_ex)                                                                       \
	X(EVP_Digest)                                                                              \
	X(EVP_DigestFinal_ex)                                                                      \
	X(EVP_DigestInit_ex)                                                                       \
	X(EVP_DigestInit_ex2)                                                                      \
	X(EVP_DigestSign)                                                                          \
	X(EVP_DigestSignInit)                                                                      \
	X(EVP_DigestUpdate)                                                                        \
	X(EVP_DigestVerify)                                                                        \
	X(EVP_DigestVerifyInit)                                                                    \
	X(EVP_MAC_CTX_set_params)                                                                  \
	X(EVP_MAC_init)                                                                            \
	X(EVP_MD_CTX_free)                                                                         \
	X(EVP_MD_CTX_new)                                                                          \
	X(EVP_MD_fetch)                                                                            \
	X(EVP_MD_free)                                                                             \
	X(EVP_PKEY_CTX_free)                                                                       \
	X(EVP_PKEY_CTX_new_from_name)                                                              \
	X(EVP_PKEY_CTX_new_id)                                                                     \
	X(EVP_PKEY_Q_keygen)                                                                       \
	X(EVP_PKEY_free)                                                                           \
	X(EVP_PKEY_fromdata)                                                                       \
	X(EVP_PKEY_fromdata_init)                                                                  \
	X(EVP_PKEY_get_base_id)                                                                    \
	X(EVP_PKEY_get_id)                                                                         \
	X(EVP_PKEY_get_raw_public_key)                                                             \
	X(EVP_PKEY_keygen)                                                                         \
	X(EVP_PKEY_keygen_init)                                                                    \
	X(EVP_PKEY_new_raw_public_key)                                                             \
	X(EVP_aes_256_cbc)                                                                         \
	X(EVP_sha1)                                                                                \
	X(EVP_sha256)                                                                              \
	X(GENERAL_NAMES_free)                                                                      \
	X(OBJ_nid2sn)                                                                              \
	X(OCSP_BASICRESP_free)                                                                     \
	X(OCSP_CERTID_free)                                                                        \
	X(OCSP_RESPONSE_free)                                                                      \
	X(OCSP_basic_verify)                                                                       \
	X(OCSP_cert_to_id)                                                                         \
	X(OCSP_crl_reason_str)                                                                     \
	X(OCSP_resp_find_status)                                                                   \
	X(OCSP_resp_get0_produced_at)                                                              \
	X(OCSP_response_get1_basic)                                                                \
	X(OCSP_response_status)                                                                    \
	X(OCSP_response_status_str)                                                                \
	X(OPENSSL_cleanse)                                                                         \
	X(OPENSSL_sk_new_null)                                                                     \
	X(OPENSSL_sk_num)                                                                          \
	X(OPENSSL_sk_pop_free)                                                                     \
	X(OPENSSL_sk_push)                                                                         \
	X(OPENSSL_sk_value)                                                                        \
	X(OSSL_PARAM_BLD_free)                                                                     \
	X(OSSL_PARAM_BLD_new)                                                                      \
	X(OSSL_PARAM_BLD_push_BN)                                                                  \
	X(OSSL_PARAM_BLD_to_param)                                                                 \
	X(OSSL_PARAM_construct_end)                                                                \
	X(OSSL_PARAM_construct_octet_string)                                                       \
	X(OSSL_PARAM_construct_utf8_string)                                                        \
	X(OSSL_PARAM_free)                                                                         \
	X(OpenSSL_version)                                                                         \
	X(PEM_X509_INFO_read_bio)                                                                  \
	X(PEM_read_X509)                                                                           \
	X(PEM_read_bio_PUBKEY)                                                                     \
	X(PEM_read_bio_PrivateKey)                                                                 \
	X(PEM_read_bio_X509)                                                                       \
	X(PEM_write_bio_PUBKEY)                                                                    \
	X(PEM_write_bio_PrivateKey)                                                                \
	X(PEM_write_bio_X509)                                                                      \
	X(RAND_bytes)                                                                              \
	X(SHA256)                                                                                  \
	X(SSL_CTX_add_client_CA)                                                                   \
	X(SSL_CTX_callback_ctrl)                                                                   \
	X(SSL_CTX_check_private_key)                                                               \
	X(SSL_CTX_ctrl)                                                                            \
	X(SSL_CTX_free)                                                                            \
	X(SSL_CTX_get0_certificate)                                                                \
	X(SSL_CTX_get0_param)                                                                      \
	X(SSL_CTX_get_cert_store)                                                                  \
	X(SSL_CTX_get_ex_data)                                                                     \
	X(SSL_CTX_get_options)                                                                     \
	X(SSL_CTX_get_security_level)                                                              \
	X(SSL_CTX_get_verify_mode)                                                                 \
	X(SSL_CTX_load_verify_locations)                                                           \
	X(SSL_CTX_new)                                                                             \
	X(SSL_CTX_sess_get_new_cb)                                                                 \
	X(SSL_CTX_sess_set_new_cb)                                                                 \
	X(SSL_CTX_set_alpn_protos)                                                                 \
	X(SSL_CTX_set_alpn_select_cb)                                                              \
	X(SSL_CTX_set_cipher_list)                                                                 \
	X(SSL_CTX_set_ciphersuites)                                                                \
	X(SSL_CTX_set_default_verify_paths)                                                        \
	X(SSL_CTX_set_ex_data)                                                                     \
	X(SSL_CTX_set_num_tickets)                                                                 \
	X(SSL_CTX_set_options)                                                                     \
	X(SSL_CTX_set_session_id_context)                                                          \
	X(SSL_CTX_set_session_ticket_cb)                                                           \
	X(SSL_CTX_set_timeout)                                                                     \
	X(SSL_CTX_set_tlsext_ticket_key_evp_cb)                                                    \
	X(SSL_CTX_set_verify)                                                                      \
	X(SSL_CTX_set_verify_depth)                                                                \
	X(SSL_CTX_up_ref)                                                                          \
	X(SSL_CTX_use_PrivateKey)                                                                  \
	X(SSL_CTX_use_certificate)                                                                 \
	X(SSL_CTX_use_certificate_chain_file)                                                      \
	X(SSL_SESSION_free)                                                                        \
	X(SSL_SESSION_get0_peer)                                                                   \
	X(SSL_SESSION_get_protocol_version)                                                        \
	X(SSL_SESSION_get_time)                                                                    \
	X(SSL_SESSION_get_timeout)                                                                 \
	X(SSL_SESSION_is_resumable)                                                                \
	X(SSL_SESSION_new)                                                                         \
	X(SSL_SESSION_set1_id)                                                                     \
	X(SSL_SESSION_set_protocol_version)                                                        \
	X(SSL_SESSION_set_time)                                                                    \
	X(SSL_SESSION_set_timeout)                                                                 \
	X(SSL_SESSION_up_ref)                                                                      \
	X(SSL_accept)                                                                              \
	X(SSL_connect)                                                                             \
	X(SSL_ctrl)                                                                                \
	X(SSL_do_handshake)                                                                        \
	X(SSL_free)                                                                                \
	X(SSL_free_buffers)                                                                        \
	X(SSL_get0_param)                                                                          \
	X(SSL_get1_peer_certificate)                                                               \
	X(SSL_get_SSL_CTX)                                                                         \
	X(SSL_get_certificate)                                                                     \
	X(SSL_get_error)                                                                           \
	X(SSL_get_ex_data)                                                                         \
	X(SSL_get_peer_cert_chain)                                                                 \
	X(SSL_get_rbio)                                                                            \
	X(SSL_get_session)                                                                         \
	X(SSL_get_wbio)                                                                            \
	X(SSL_get_servername)                                                                      \
	X(SSL_get_verify_result)                                                                   \
	X(SSL_has_pending)                                                                         \
	X(SSL_new)                                                                                 \
	X(SSL_read)                                                                                \
	X(SSL_read_ex)                                                                             \
	X(SSL_session_reused)                                                                      \
	X(SSL_set1_host)                                                                           \
	X(SSL_set_accept_state)                                                                    \
	X(SSL_set_bio)                                                                             \
	X(SSL_set_connect_state)                                                                   \
	X(SSL_set_ex_data)                                                                         \
	X(SSL_set_fd)                                                                              \
	X(SSL_set_session)                                                                         \
	X(SSL_shutdown)                                                                            \
	X(SSL_version)                                                                             \
	X(SSL_write)                                                                               \
	X(SSL_write_ex)                                                                            \
	X(TLS_client_method)                                                                       \
	X(TLS_server_method)                                                                       \
	X(X509V3_EXT_conf_nid)                                                                     \
	X(X509V3_set_ctx)                                                                          \
	X(X509_CRL_get0_nextUpdate)                                                                \
	X(X509_CRL_get_issuer)                                                                     \
	X(X509_EXTENSION_free)                                                                     \
	X(X509_INFO_free)                                                                          \
	X(X509_NAME_ENTRY_get_data)                                                                \
	X(X509_NAME_add_entry_by_txt)                                                              \
	X(X509_NAME_cmp)                                                                           \
	X(X509_NAME_get_entry)                                                                     \
	X(X509_NAME_get_index_by_NID)                                                              \
	X(X509_NAME_oneline)                                                                       \
	X(X509_NAME_print_ex)                                                                      \
	X(X509_OBJECT_get0_X509_CRL)                                                               \
	X(X509_OBJECT_get_type)                                                                    \
	X(X509_STORE_CTX_free)                                                                     \
	X(X509_STORE_CTX_get0_param)                                                               \
	X(X509_STORE_CTX_get_error)                                                                \
	X(X509_STORE_CTX_init)                                                                     \
	X(X509_STORE_CTX_new)                                                                      \
	X(X509_STORE_CTX_set_default)                                                              \
	X(X509_STORE_add_cert)                                                                     \
	X(X509_STORE_add_crl)                                                                      \
	X(X509_STORE_free)                                                                         \
	X(X509_STORE_get0_objects)                                                                 \
	X(X509_STORE_new)                                                                          \
	X(X509_STORE_set_flags)                                                                    \
	X(X509_VERIFY_PARAM_get_hostflags)                                                         \
	X(X509_VERIFY_PARAM_set1)                                                                  \
	X(X509_VERIFY_PARAM_set1_host)                                                             \
	X(X509_VERIFY_PARAM_set1_ip)                                                               \
	X(X509_VERIFY_PARAM_set1_ip_asc)                                                           \
	X(X509_VERIFY_PARAM_set_hostflags)                                                         \
	X(X509_VERIFY_PARAM_set_purpose)                                                           \
	X(X509_add_ext)                                                                            \
	X(X509_check_host)                                                                         \
	X(X509_check_issued)                                                                       \
	X(X509_check_private_key)                                                                  \
	X(X509_cmp)                                                                                \
	X(X509_cmp_current_time)                                                                   \
	X(X509_free)                                                                               \
	X(X509_get0_notAfter)                                                                      \
	X(X509_get0_notBefore)                                                                     \
	X(X509_get0_pubkey)                                                                        \
	X(X509_get_ext_d2i)                                                                        \
	X(X509_get_issuer_name)                                                                    \
	X(X509_get_serialNumber)                                                                   \
	X(X509_get_subject_name)                                                                   \
	X(X509_getm_notAfter)                                                                      \
	X(X509_getm_notBefore)                                                                     \
	X(X509_gmtime_adj)                                                                         \
	X(X509_new)                                                                                \
	X(X509_set_issuer_name)                                                                    \
	X(X509_set_pubkey)                                                                         \
	X(X509_set_version)                                                                        \
	X(X509_sign)                                                                               \
	X(X509_up_ref)                                                                             \
	X(X509_verify_cert)                                                                        \
	X(X509_verify_cert_error_string)                                                           \
	X(d2i_OCSP_RESPONSE)                                                                       \
	X(i2d_ECDSA_SIG)
enum {
#define X(f) SYM_##f,
	OSSL_FUNCS(X)
#undef X
	        SYM__COUNT
};
static const char *const ossl_names[] = {
#define X(f) #f,
	OSSL_FUNCS(X)
#undef X
};

#define OSSL_PAGE 4096
#define OSSL_SLOTS                                                                                 \
	(((SYM__COUNT * sizeof(void *) + OSSL_PAGE - 1) / OSSL_PAGE) * OSSL_PAGE / sizeof(void *))

/* The trampolines' targets, zero until bound; whole pages of their own, so that they can be made
 * read-only once bound without touching anything else. */
__attribute__((visibility("hidden"), used, aligned(OSSL_PAGE))) void *custos_ossl_slots[OSSL_SLOTS];

static pthread_mutex_t ossl_mu = PTHREAD_MUTEX_INITIALIZER;
static int ossl_state; /* 0 not tried, 1 bound, -1 failed (final: one answer per process) */
static char ossl_msg[LAZYLIB_MSG_MAX];

static void ossl_load_locked(void)
{
	static const char soname[] = "libssl.so.3";
	void *h = dlopen(soname, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
	if (h == NULL) {
		const char *why = dlerror();
		snprintf(ossl_msg, sizeof(ossl_msg),
		         "custos needs %s (OpenSSL), which cannot be loaded: %s (package libssl3)",
		         soname, why ? why : "unknown error");
		__atomic_store_n(&ossl_state, -1, __ATOMIC_RELEASE);
		return;
	}
	void *found[SYM__COUNT];
	for (size_t i = 0; i < SYM__COUNT; i++) {
		(void)dlerror();
		/* The handle's scope is libssl and its dependencies: libcrypto's functions too. */
		found[i] = dlsym(h, ossl_names[i]);
		if (found[i] == NULL) {
			snprintf(ossl_msg, sizeof(ossl_msg),
			         "custos needs %s (OpenSSL 3), which lacks %s (package libssl3)",
			         soname, ossl_names[i]);
			dlclose(h); /* RTLD_NODELETE: stays mapped */
			__atomic_store_n(&ossl_state, -1, __ATOMIC_RELEASE);
			return;
		}
	}
	memcpy(custos_ossl_slots, found, sizeof(found));
	/* Hardening, as RELRO does for the GOT: a stray write can no longer redirect a call.
	 * Best effort: a failure leaves the slots writable, nothing else. */
	(void)mprotect(custos_ossl_slots, sizeof(custos_ossl_slots), PROT_READ);
	ossl_msg[0] = '\0';
	__atomic_store_n(&ossl_state, 1, __ATOMIC_RELEASE);
}

int custos_ossl_bind(char *msg, size_t msgsz)
{
	int s = __atomic_load_n(&ossl_state, __ATOMIC_ACQUIRE);
	if (s == 0) {
		pthread_mutex_lock(&ossl_mu);
		if (ossl_state == 0)
			ossl_load_locked();
		s = ossl_state;
		pthread_mutex_unlock(&ossl_mu);
	}
	if (s == 1)
		return 0;
	if (msg && msgsz)
		snprintf(msg, msgsz, "%s", ossl_msg);
	return -1;
}

/* Entered from the resolver below with the caller's argument registers saved. */
__attribute__((visibility("hidden"), used)) void custos_ossl_resolve_c(void);
void custos_ossl_resolve_c(void)
{
	if (custos_ossl_bind(NULL, 0) == 0)
		return;
	/* No OpenSSL call can go on without the library, and none may be skipped: stop. */
	static const char pre[] = "custos: fatal: ";
	ssize_t w = write(STDERR_FILENO, pre, sizeof(pre) - 1);
	w = write(STDERR_FILENO, ossl_msg, strlen(ossl_msg));
	w = write(STDERR_FILENO, "\n", 1);
	(void)w;
	abort();
}

/* The resolver: saves every register that can carry an argument (rdi, rsi, rdx, rcx, r8, r9,
 * xmm0-7, and rax, which holds the vector count of a variadic call) plus r11 (the slot index),
 * binds, restores them and jumps to the real function, so the caller's call completes as if it
 * had gone there directly. r10 and r11 are scratch at a call boundary in the SysV ABI. */
__asm__(".text\n"
        "\t.p2align 4\n"
        "\t.type custos_ossl_resolve,@function\n"
        "custos_ossl_resolve:\n"
        "\tpushq %rbp\n"
        "\tmovq %rsp, %rbp\n"
        "\tandq $-16, %rsp\n"
        "\tsubq $192, %rsp\n"
        "\tmovq %rdi, 0(%rsp)\n"
        "\tmovq %rsi, 8(%rsp)\n"
        "\tmovq %rdx, 16(%rsp)\n"
        "\tmovq %rcx, 24(%rsp)\n"
        "\tmovq %r8, 32(%rsp)\n"
        "\tmovq %r9, 40(%rsp)\n"
        "\tmovq %rax, 48(%rsp)\n"
        "\tmovq %r11, 56(%rsp)\n"
        "\tmovdqa %xmm0, 64(%rsp)\n"
        "\tmovdqa %xmm1, 80(%rsp)\n"
        "\tmovdqa %xmm2, 96(%rsp)\n"
        "\tmovdqa %xmm3, 112(%rsp)\n"
        "\tmovdqa %xmm4, 128(%rsp)\n"
        "\tmovdqa %xmm5, 144(%rsp)\n"
        "\tmovdqa %xmm6, 160(%rsp)\n"
        "\tmovdqa %xmm7, 176(%rsp)\n"
        "\tcall custos_ossl_resolve_c\n"
        "\tmovq 0(%rsp), %rdi\n"
        "\tmovq 8(%rsp), %rsi\n"
        "\tmovq 16(%rsp), %rdx\n"
        "\tmovq 24(%rsp), %rcx\n"
        "\tmovq 32(%rsp), %r8\n"
        "\tmovq 40(%rsp), %r9\n"
        "\tmovq 48(%rsp), %rax\n"
        "\tmovq 56(%rsp), %r11\n"
        "\tmovdqa 64(%rsp), %xmm0\n"
        "\tmovdqa 80(%rsp), %xmm1\n"
        "\tmovdqa 96(%rsp), %xmm2\n"
        "\tmovdqa 112(%rsp), %xmm3\n"
        "\tmovdqa 128(%rsp), %xmm4\n"
        "\tmovdqa 144(%rsp), %xmm5\n"
        "\tmovdqa 160(%rsp), %xmm6\n"
        "\tmovdqa 176(%rsp), %xmm7\n"
        "\tmovq %rbp, %rsp\n"
        "\tpopq %rbp\n"
        "\tleaq custos_ossl_slots(%rip), %r10\n"
        "\tjmp *(%r10,%r11,8)\n"
        "\t.size custos_ossl_resolve, .-custos_ossl_resolve\n");

#if defined(__CET__) && (__CET__ & 1)
#define OSSL_ENDBR "\tendbr64\n"
#else
#define OSSL_ENDBR ""
#endif
#define OSSL_STR_(x) #x
#define OSSL_STR(x)  OSSL_STR_(x)
/* One trampoline; i is the function's index in OSSL_FUNCS (__COUNTER__, checked below). */
#define OSSL_TRAMP(f, i)                                                                           \
	__asm__(".text\n"                                                                          \
	        "\t.globl " #f "\n"                                                                \
	        "\t.type " #f ",@function\n"                                                       \
	        "\t.p2align 4\n" #f ":\n" OSSL_ENDBR "\tmovq custos_ossl_slots+" OSSL_STR(         \
	                i) "*8(%rip), %r11\n"                                                      \
	                   "\ttestq %r11, %r11\n"                                                  \
	                   "\tjz 1f\n"                                                             \
	                   "\tjmp *%r11\n"                                                         \
	                   "1:\tmovl $" OSSL_STR(i) ", %r11d\n"                                    \
	                                            "\tjmp custos_ossl_resolve\n"                  \
	                                            "\t.size " #f ", .-" #f "\n");
#define X(f) OSSL_TRAMP(f, __COUNTER__)
OSSL_FUNCS(X)
#undef X
/* __COUNTER__ counted 0 .. SYM__COUNT-1 above, in the order of ossl_names. */
_Static_assert(__COUNTER__ == SYM__COUNT, "trampoline indices out of step with OSSL_FUNCS");

#else /* !CUSTOS_LAZY_OPENSSL: linked as usual */

int custos_ossl_bind(char *msg, size_t msgsz)
{
	(void)msg;
	(void)msgsz;
	return 0;
}

#endif
