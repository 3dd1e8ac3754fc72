/* platform/proc.h -- OS layer declarations for one concern; see platform.h. */
#ifndef CMP_PLATFORM_PROC_H
#define CMP_PLATFORM_PROC_H

#endif
