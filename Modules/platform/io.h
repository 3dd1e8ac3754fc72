/* platform/io.h -- OS layer declarations for one concern; see platform.h. */
#ifndef CMP_PLATFORM_IO_H
#define CMP_PLATFORM_IO_H

#endif
