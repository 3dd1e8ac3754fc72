/* platform/shm.h -- OS layer declarations for one concern; see platform.h. */
#ifndef CMP_PLATFORM_SHM_H
#define CMP_PLATFORM_SHM_H

#endif
