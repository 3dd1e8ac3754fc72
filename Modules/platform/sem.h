/* platform/sem.h -- OS layer declarations for one concern; see platform.h. */
#ifndef CMP_PLATFORM_SEM_H
#define CMP_PLATFORM_SEM_H

#endif
