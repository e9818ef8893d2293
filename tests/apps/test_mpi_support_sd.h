/* The tiny SD training run of the data-parallel tests (test_mpi_support.h). */
#ifndef VKL_TEST_MPI_SUPPORT_SD_H
#define VKL_TEST_MPI_SUPPORT_SD_H

#include "test_mpi_support.h"

static char sd_common[2048];

static inline void prepare_images(void)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/images' && cp '%s'/*.png '%s'/*.txt '%s/images/'", vkl_test_dir,
             vkl_test_shared_path("data/wesnoth-portraits/test16-128px"),
             vkl_test_shared_path("data/wesnoth-portraits/test16-128px"), vkl_test_dir);
    assert_int_equal(system(cmd), 0);
    snprintf(sd_common, sizeof sd_common,
             "train --model '%s' --images images --resolution 64 --rank 4 --alpha 2 --lr 1e-3 --batch 1 --seed 7 "
             "--quiet",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
}

#endif
