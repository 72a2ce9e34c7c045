/* Shared by every smp-profiler probe: limits and conventions.
 *
 * Every probe declares, in its own .c file:
 *   smp_filter_pids  BPF_HASH(u32 tgid -> u8), filled by user space with the processes to
 *                    trace; every program returns at once for anything else;
 *   smp_drops        BPF_PERCPU_ARRAY(u64, 1), incremented whenever a ring-buffer
 *                    reservation fails; user space reads and reports it.
 * They are declared per probe because BCC rewrites map calls (map.lookup()) only in the
 * main source file, never in an included header or a macro.
 */
#ifndef SMP_COMMON_H
#define SMP_COMMON_H

#ifndef SMP_MAX_PIDS
#define SMP_MAX_PIDS 1024
#endif

#ifndef SMP_RINGBUF_PAGES
#define SMP_RINGBUF_PAGES 256
#endif

#endif
